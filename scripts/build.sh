#!/usr/bin/env bash
# Configure and build lightserve (Release) into build/.
#   bash scripts/build.sh [extra cmake configure args...]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

BUILD_DIR="${BUILD_DIR:-build}"
JOBS="${JOBS:-$(nproc)}"

echo "[build] configuring $BUILD_DIR (Release)"
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release "$@"
echo "[build] building with -j$JOBS"
cmake --build "$BUILD_DIR" -j"$JOBS"
echo "[build] done"
