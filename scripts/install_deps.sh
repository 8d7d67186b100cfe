#!/usr/bin/env bash
# Install every Debian (bookworm) package the build, the tests and the scripts need.
# Idempotent: when every package is already installed, apt is not touched at all (fast).
# Runs apt as root, or through sudo when not root.
set -euo pipefail

PACKAGES=(
  # toolchain and build
  build-essential cmake pkg-config git clang clang-format libclang-rt-14-dev
  # python (fetch_model.sh uses pip; goldens use a venv)
  python3 python3-venv python3-pip
  # libraries (see docs/design.md §12)
  libpcre2-dev libdnnl-dev ocl-icd-opencl-dev opencl-c-headers
  libgtest-dev libgmock-dev libbenchmark-dev libcli11-dev nlohmann-json3-dev libyaml-cpp-dev
  # frontends/: gRPC + protobuf, Boost.Beast (1.81: has Boost.JSON), Prometheus client
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libboost1.81-dev prometheus-cpp-dev
  # scripts: downloads, unzip, /usr/bin/time -v for peak RSS in benchmarks
  curl ca-certificates unzip time
  # promtool for tests/deploy (the alert rules load and their unit tests)
  prometheus
)

log() { echo "[install_deps] $*"; }

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

# XGrammar (constrained decoding) is not packaged by Debian: its pinned PyPI sdist, unpacked
# into third_party/xgrammar/ (idempotent).
fetch_sources() { bash "$(dirname "${BASH_SOURCE[0]}")/fetch_xgrammar.sh"; }

if [[ ${#missing[@]} -eq 0 ]]; then
  log "all ${#PACKAGES[@]} packages already installed"
  fetch_sources
  exit 0
fi

SUDO=""
if [[ "$(id -u)" -ne 0 ]]; then
  command -v sudo >/dev/null || { log "ERROR: not root and no sudo; install: ${missing[*]}"; exit 1; }
  SUDO="sudo"
fi

log "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fetch_sources
log "done"
