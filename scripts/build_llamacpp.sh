#!/usr/bin/env bash
# Build the reference llama.cpp from the SAME sources as the pinned PyPI llama-cpp-python sdist
# (the one the goldens are generated with), under .cache/llama.cpp/ (git-ignored).
#
#   bash scripts/build_llamacpp.sh          # idempotent: skips when the binaries exist
#   LLAMACPP_FETCH_ONLY=1 bash scripts/build_llamacpp.sh   # only fetch + extract the sources
#                                           # (.cache/llama.cpp/src; scripts/build_llamacpp_cuda.sh)
#
# Outputs: .cache/llama.cpp/bin -> build-<compiler>/bin with {llama-bench, llama-batched-bench,
#          llama-simple, llama-completion, llama-tokenize, llama-quantize, llama-server}, and
#          .cache/llama.cpp/VERSION. llama-quantize makes the K-quant test files; llama-server is
#          the peer that scripts/bench_serving.sh load-tests.
#
# This is the *reference* we compare against, so it is built the way llama.cpp builds by default:
# Release, GGML_NATIVE=ON (i.e. -march=native for this CPU, AMX included where the CPU has it).
# Our own shipped builds do not use -march=native (they dispatch at run time); the reference is
# allowed to. llama-cli is not built (the server and llama-completion cover what we use).
#
# Compiler: clang when present (LLAMACPP_CC=gcc to override). GCC 12 (bookworm) miscompiles
# ggml's AMX tile setup (the stores to the tile config before _tile_loadconfig are dropped), so a
# GCC build crashes with a general protection fault on AMX machines unless run with
# --no-repack; clang 14 builds it correctly.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PY_VERSION="0.3.36"
SDIST_NAME="llama_cpp_python-${PY_VERSION}.tar.gz"
CACHE="$ROOT/.cache/llama.cpp"
SRC_PARENT="$CACHE/src"
SRC="$SRC_PARENT/llama_cpp_python-${PY_VERSION}/vendor/llama.cpp"
if [[ -n "${LLAMACPP_CC:-}" ]]; then CC_NAME="$LLAMACPP_CC";
elif command -v clang >/dev/null && command -v clang++ >/dev/null; then CC_NAME=clang;
else CC_NAME=gcc; fi
case "$CC_NAME" in
  clang) export CC=clang CXX=clang++ ;;
  gcc)   export CC=gcc CXX=g++ ;;
  *) echo "LLAMACPP_CC must be clang or gcc" >&2; exit 1 ;;
esac
BUILD="$CACHE/build-$CC_NAME"
BIN="$BUILD/bin"
TARGETS=(llama-bench llama-batched-bench llama-simple llama-completion llama-tokenize llama-quantize
  llama-server)
JOBS="${JOBS:-2}"

log() { echo "[build_llamacpp] $*"; }

have_all() {
  local t
  for t in "${TARGETS[@]}"; do [[ -x "$BIN/$t" ]] || return 1; done
  [[ -f "$BUILD/VERSION" ]]
}

publish() {  # .cache/llama.cpp/{bin,VERSION} point at this build
  ln -sfn "build-$CC_NAME/bin" "$CACHE/bin"
  cp "$BUILD/VERSION" "$CACHE/VERSION"
}

if [[ -z "${LLAMACPP_FETCH_ONLY:-}" ]] && have_all; then
  publish
  log "already built: $BIN"
  cat "$CACHE/VERSION"
  exit 0
fi

mkdir -p "$CACHE" "$SRC_PARENT"

# 1. The sdist: reuse a local copy when present, else ask PyPI through pip.
SDIST=""
for cand in "$CACHE/$SDIST_NAME" "/tmp/dl/$SDIST_NAME"; do
  if [[ -f "$cand" ]]; then SDIST="$cand"; break; fi
done
if [[ -z "$SDIST" ]]; then
  log "downloading llama-cpp-python==${PY_VERSION} sdist from PyPI"
  python3 -m pip download --quiet --no-deps --no-binary :all: \
    "llama-cpp-python==${PY_VERSION}" -d "$CACHE"
  SDIST="$CACHE/$SDIST_NAME"
fi
[[ -f "$SDIST" ]] || { log "ERROR: sdist not found at $SDIST"; exit 1; }

# 2. Extract (once).
if [[ ! -f "$SRC/CMakeLists.txt" ]]; then
  log "extracting $SDIST"
  tmp="$(mktemp -d "$SRC_PARENT/.extract.XXXXXX")"
  tar -xzf "$SDIST" -C "$tmp"
  rm -rf "$SRC_PARENT/llama_cpp_python-${PY_VERSION}"
  mv "$tmp/llama_cpp_python-${PY_VERSION}" "$SRC_PARENT/"
  rmdir "$tmp"
fi

if [[ -n "${LLAMACPP_FETCH_ONLY:-}" ]]; then
  log "sources in $SRC"
  exit 0
fi

# 3. Version record: the sdist carries the submodule's git metadata (HEAD = the vendored commit).
COMMIT="unknown"
HEADF="$SRC_PARENT/llama_cpp_python-${PY_VERSION}/.git/modules/vendor/llama.cpp/HEAD"
if [[ -f "$HEADF" ]]; then COMMIT="$(tr -d '[:space:]' < "$HEADF")"; fi

# 4. Configure + build.
log "configuring with $CC_NAME (Release, native CPU flags, no curl/openssl, no tests)"
cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release \
  -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_EXAMPLES=ON \
  -DGGML_NATIVE=ON -DGGML_CUDA=OFF > "$BUILD.configure.log" 2>&1 \
  || { tail -40 "$BUILD.configure.log"; log "ERROR: configure failed"; exit 1; }
log "building ${TARGETS[*]} with -j$JOBS (several minutes on 2 cores)"
cmake --build "$BUILD" --config Release -j"$JOBS" --target "${TARGETS[@]}" > "$BUILD.build.log" 2>&1 \
  || { tail -40 "$BUILD.build.log"; log "ERROR: build failed"; exit 1; }

BUILD_INFO="$("$BIN/llama-bench" --version 2>&1 | head -3 | tr '\n' ' ' || true)"
{
  echo "llama-cpp-python ${PY_VERSION}"
  echo "llama.cpp commit ${COMMIT}"
  echo "compiler: ${CC_NAME}"
  echo "build-info: ${BUILD_INFO}"
} > "$BUILD/VERSION"

have_all || { log "ERROR: some binaries missing in $BIN"; exit 1; }
publish
log "done: $BIN"
cat "$CACHE/VERSION"
