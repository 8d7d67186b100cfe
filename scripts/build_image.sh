#!/usr/bin/env bash
# Build the lightserve container image (deploy/container/Containerfile), end to end, offline too.
#
#   bash scripts/build_image.sh                       # CPU image lightserve:cpu, compiled in the build stage
#   bash scripts/build_image.sh --prebuilt build-cpu/lightserve   # reuse a CPU-only binary built here
#   bash scripts/build_image.sh --base docker.io/library/debian:bookworm   # a base from a registry
#   bash scripts/build_image.sh --cuda                # CUDA image lightserve:cuda (needs NVIDIA's apt repo)
#   bash scripts/build_image.sh --base-only           # only make the Debian 12 base (step 2)
#
# Steps:
#  1. Container engine: podman (buildah inside), else docker. Where podman's defaults cannot run
#     in this machine's sandbox (cgroup v1/v2 hybrid that crun refuses, rlimits above what the
#     sandbox lets root raise, no iptables for the bridge network), a containers.conf with runc,
#     lower ulimits and host networking is written to .cache/containers/containers.conf and used
#     through CONTAINERS_CONF. A normal host uses podman's defaults.
#  2. Base image: --base IMAGE, else localhost/lightserve-base:bookworm, made once when absent
#     from Debian's packages with mmdebstrap (Debian 12, minbase) and `podman import`ed. No
#     registry is needed.
#  3. Context: the files git tracks or would track (tracked + untracked, not ignored) copied to a
#     temporary folder, so build trees and models never enter it; plus the prebuilt binary.
#  4. `podman build --target runtime` (or runtime-prebuilt); the image's own RUN step checks every library resolves.
#
# Environment: LIGHTSERVE_IMAGE_TAG (default lightserve:cpu / lightserve:cuda),
# LIGHTSERVE_BASE_TAG (default localhost/lightserve-base:bookworm), BUILD_JOBS
# (compile jobs in the build stage, default all cores), CONTAINER_ENGINE (podman|docker).
# Installs podman, buildah, runc and mmdebstrap with apt when they are missing (root or sudo).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
log() { echo "[build_image] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

FLAVOR=cpu
BASE=""
PREBUILT=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --cuda) FLAVOR=cuda; shift ;;
    --cpu) FLAVOR=cpu; shift ;;
    --base) BASE="$2"; shift 2 ;;
    --prebuilt) PREBUILT="$2"; shift 2 ;;
    --tag) LIGHTSERVE_IMAGE_TAG="$2"; shift 2 ;;
    --base-only) BASE_ONLY=1; shift ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done
TAG="${LIGHTSERVE_IMAGE_TAG:-lightserve:$FLAVOR}"
BASE_TAG="${LIGHTSERVE_BASE_TAG:-localhost/lightserve-base:bookworm}"
BASE_ONLY="${BASE_ONLY:-0}"

# ---- 1. engine ---------------------------------------------------------------------------------
SUDO=""
[[ "$(id -u)" -eq 0 ]] || SUDO="sudo"
need=()
for tool in podman buildah runc mmdebstrap; do command -v "$tool" >/dev/null || need+=("$tool"); done
if [[ ${#need[@]} -gt 0 && "${CONTAINER_ENGINE:-podman}" == podman ]]; then
  log "installing ${need[*]} (apt)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    podman buildah runc mmdebstrap uidmap >/dev/null
fi
ENGINE="${CONTAINER_ENGINE:-podman}"
command -v "$ENGINE" >/dev/null || die "$ENGINE is not installed"

# The sandbox settings, used only when podman's defaults fail to run a container.
source "$ROOT/scripts/container_env.sh"

# ---- 2. base -----------------------------------------------------------------------------------
if [[ -z "$BASE" ]]; then
  BASE="$BASE_TAG"
  if ! "$ENGINE" image exists "$BASE_TAG" 2>/dev/null; then
    command -v mmdebstrap >/dev/null || die "mmdebstrap is not installed (apt-get install mmdebstrap)"
    tar_file="$(mktemp --suffix=.tar)"
    log "making $BASE_TAG from Debian's packages (mmdebstrap bookworm minbase)"
    $SUDO mmdebstrap --variant=minbase --mode=root --include=ca-certificates \
      bookworm "$tar_file" http://deb.debian.org/debian >&2
    "$ENGINE" import --change 'CMD ["/bin/bash"]' "$tar_file" "$BASE_TAG" >/dev/null
    rm -f "$tar_file"
  fi
fi
container_env_check "$BASE"
log "base image: $BASE; engine: $ENGINE${CONTAINERS_CONF:+ (CONTAINERS_CONF=$CONTAINERS_CONF)}"
[[ "$BASE_ONLY" == 1 ]] && exit 0

# ---- 3. context --------------------------------------------------------------------------------
ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
git ls-files -z --cached --others --exclude-standard |
  while IFS= read -r -d '' f; do [[ -e "$f" ]] && printf '%s\0' "$f"; done |
  tar --null -T - -cf - | tar -xf - -C "$ctx"
# XGrammar's sources are fetched (pinned, hash-checked), not tracked, so git ls-files leaves them
# out; the build stage compiles them (cmake/xgrammar.cmake).
bash scripts/fetch_xgrammar.sh >&2
mkdir -p "$ctx/third_party"
cp -r third_party/xgrammar "$ctx/third_party/xgrammar"
args=(--build-arg "DEBIAN_IMAGE=$BASE" --build-arg "BUILD_JOBS=${BUILD_JOBS:-0}")
target=runtime
rev="$(git rev-parse HEAD)"
git diff --quiet HEAD 2>/dev/null || rev="$rev-dirty"
args+=(--label "org.opencontainers.image.revision=$rev" --label "org.opencontainers.image.source=lightserve")
if [[ -n "$PREBUILT" ]]; then
  [[ "$FLAVOR" == cpu ]] || die "--prebuilt is for the CPU image"
  [[ -x "$PREBUILT" ]] || die "$PREBUILT is not an executable"
  mkdir -p "$ctx/.prebuilt"
  cp "$PREBUILT" "$ctx/.prebuilt/lightserve"
  bash deploy/container/runtime-packages.sh "$PREBUILT" > "$ctx/.prebuilt/runtime-packages.txt" ||
    die "$PREBUILT links libraries no Debian package holds (a CUDA build? use -DLIGHTSERVE_CUDA=OFF)"
  args+=(--build-arg PREBUILT_DIR=.prebuilt)
  target=runtime-prebuilt
fi

# ---- 4. build ----------------------------------------------------------------------------------
file="deploy/container/Containerfile"
[[ "$FLAVOR" == cuda ]] && file="deploy/container/Containerfile.cuda"
build_flags=()
[[ "$ENGINE" == podman ]] && build_flags+=("${CONTAINER_BUILD_FLAGS[@]}")
log "building $TAG from $file"
start=$SECONDS
"$ENGINE" build "${build_flags[@]}" "${args[@]}" --target "$target" -f "$ctx/$file" -t "$TAG" "$ctx"
log "built $TAG in $((SECONDS - start)) s"
"$ENGINE" image ls "$TAG" >&2
