#!/usr/bin/env bash
# The runtime benchmark of issue 2: lightserve's build/bench/runtime_bench and llama.cpp's own
# llama-bench / llama-batched-bench (built from the same pinned sources by build_llamacpp.sh), on
# the same machine in the same run, then a table with the ratios (paste it into
# docs/benchmarks.md with the date and machine). Both use 2 threads.
#   bash scripts/bench_runtime.sh [OUT_DIR]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${1:-$ROOT/.cache/bench}"
mkdir -p "$OUT"
bash scripts/fetch_model.sh
bash scripts/build.sh >/dev/null
bash scripts/build_llamacpp.sh
echo "load average before: $(cat /proc/loadavg)"
build/bench/runtime_bench --threads 2 --json "$OUT/lightserve.json"
bash scripts/bench_llamacpp.sh "$OUT/llamacpp.json"
echo "load average after: $(cat /proc/loadavg)"
echo
python3 scripts/bench_compare.py "$OUT/lightserve.json" "$OUT/llamacpp.json" | tee "$OUT/compare.md"
