#!/usr/bin/env bash
# The checks that need an NVIDIA GPU, in one run: the CUDA backend's ops against the CPU oracle
# (kernels_tests Cuda*), the real model on the GPU against the CPU (model_tests Cuda*), then the
# continuous-batching benchmark of docs/benchmarks.md on the GPU (scripts/bench_batching.sh with
# --device cuda). Everything it prints also goes to OUT_DIR.
#   bash scripts/gpu_check.sh [OUT_DIR]
# BUILD (default build) holds a build configured where nvcc was found; MODEL (default the fetched
# SmolLM2-135M-Instruct) and TEXT_DIR (default /usr/share/common-licenses) are passed on;
# BENCH_ONLY (default: the four runs of the CPU table, then the GPU-only runs of
# bench_batching.sh at both step budgets) picks the benchmark runs, "none" skips them
# (and runtime_bench: prefill and decode speed of the plain model on the GPU).
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
  "$BUILD/bench/runtime_bench" --device cuda --model "$MODEL" --prefill 512,2048,8192 \
    --decode 1,4,8,16,32 --json "$OUT/runtime_bench.json" 2>&1 | tee "$OUT/runtime_bench.txt" ||
    status=1
  BIN="$BUILD/lightserve" ONLY="${BENCH_ONLY:-2k 4k 8k 8k-f075 $(for b in 61440 491520; do
    printf '%s ' "2k-3-s$b" "4k-5-s$b" "8k-28-s$b" "8k-f075-24-s$b"; done)}" \
    BENCH_ARGS="--device cuda --model $MODEL --text-dir $TEXT_DIR" \
    bash scripts/bench_batching.sh "$OUT/bench" 2>&1 | tee "$OUT/bench.txt" || status=1
fi
exit "$status"
