#!/usr/bin/env bash
# The checks that need an NVIDIA GPU, in one run: the CUDA backend's ops against the CPU oracle
# (kernels_tests Cuda*), the real model on the GPU against the CPU (model_tests Cuda*), then the
# continuous-batching benchmark of docs/benchmarks.md on the GPU (scripts/bench_batching.sh with
# --device cuda). Everything it prints also goes to OUT_DIR.
#   bash scripts/gpu_check.sh [OUT_DIR]
# BUILD (default build) holds a build configured where nvcc was found; MODEL (default the fetched
# SmolLM2-135M-Instruct) and TEXT_DIR (default /usr/share/common-licenses) are passed on;
# BENCH_ONLY (default "2k 4k 8k 8k-f075") picks the benchmark runs, "none" skips them.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${1:-$ROOT/.cache/gpu-check}"
BUILD="${BUILD:-build}"
MODEL="${MODEL:-$ROOT/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
TEXT_DIR="${TEXT_DIR:-/usr/share/common-licenses}"
mkdir -p "$OUT"
status=0

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 |
  tee "$OUT/gpu.txt"
"$BUILD/tests/kernels_tests" --gtest_filter='Cuda*' --gtest_color=no 2>&1 |
  tee "$OUT/kernels_tests.txt" || status=1
LIGHTSERVE_TEST_MODEL="$MODEL" "$BUILD/tests/model_tests" --gtest_filter='Cuda*' \
  --gtest_color=no 2>&1 | tee "$OUT/model_tests.txt" || status=1

if [ "${BENCH_ONLY:-}" != none ]; then
  BIN="$BUILD/server/lightserve" ONLY="${BENCH_ONLY:-2k 4k 8k 8k-f075}" \
    BENCH_ARGS="--device cuda --model $MODEL --text-dir $TEXT_DIR" \
    bash scripts/bench_batching.sh "$OUT/bench" 2>&1 | tee "$OUT/bench.txt" || status=1
fi
exit "$status"
