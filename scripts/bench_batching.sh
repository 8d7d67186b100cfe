#!/usr/bin/env bash
# The continuous-batching benchmark of issue 4 (docs/benchmarks.md, "Continuous batching at
# 2K/4K/8K"): `lightserve bench --compare` (full attention, then the hybrid, same prompts and KV
# budget, layered prefill) at 2K, 4K and 8K tokens per sequence (2048 or 4096 prompt tokens + 128
# generated; at 8K, 8064 + 128 = the model's whole 8192-token context), each with a KV budget
# that holds 4 full-attention sequences; f = 0.5, and f = 0.75 at 8K; plus, for comparison, 2K
# with whole prefills and 2K and 8K with a step budget of 512 tokens through every layer. Every
# run writes its JSON and its printed table to OUT_DIR, with the load average before and after and
# sampled every 10 s during the run (OUT_DIR/NAME.load): the machine should be idle, other load
# moves every number.
#   bash scripts/bench_batching.sh [OUT_DIR]
# BIN (default build/lightserve) picks the binary; BENCH_ARGS adds arguments to every run
# (e.g. "--device cuda", or "--model PATH"); ONLY="4k 8k" runs just those; N2K,
# N4K, N8K the prompts per run (20, 12, 12: multiples of both modes' capacities where affordable,
# so that neither mode ends on a half-empty last wave of decodes; an 8K run takes ~10 minutes per
# mode on 2 vCPUs).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${1:-$ROOT/.cache/bench-batching}"
BIN="${BIN:-build/lightserve}"
ONLY="${ONLY:-}"
mkdir -p "$OUT"

only() {  # name, then the bench arguments: runs only when ONLY names it (the GPU runs)
  if [[ " $ONLY " == *" $1 "* ]]; then run "$@"; fi
}

run() {  # name, then the bench arguments
  local name="$1"
  shift
  if [ -n "$ONLY" ] && [[ " $ONLY " != *" $name "* ]]; then return 0; fi
  echo "== $name: $BIN bench $*"
  echo "load average before: $(cat /proc/loadavg)" | tee "$OUT/$name.txt"
  (while sleep 10; do cut -d' ' -f1 /proc/loadavg; done) >"$OUT/$name.load" &
  local sampler=$! status=0
  # shellcheck disable=SC2086  # BENCH_ARGS is a list of words
  "$BIN" bench -q ${BENCH_ARGS:-} "$@" --compare --json "$OUT/$name.json" | tee -a "$OUT/$name.txt" || status=$?
  kill "$sampler"
  echo "load average after: $(cat /proc/loadavg)" | tee -a "$OUT/$name.txt"
  return "$status"
}

run 2k-whole --num-prompts "${N2K:-20}" --input-len 2048 --output-len 128 --kv-budget 210000000 \
  --whole-prefill
run 2k --num-prompts "${N2K:-20}" --input-len 2048 --output-len 128 --kv-budget 210000000
# A smaller step budget (512 tokens through the 30 layers): shorter steps, so shorter stalls.
run 2k-b512 --num-prompts "${N2K:-20}" --input-len 2048 --output-len 128 --kv-budget 210000000 \
  --step-budget 15360
run 4k --num-prompts "${N4K:-12}" --input-len 4096 --output-len 128 --kv-budget 400MiB
run 8k --num-prompts "${N8K:-12}" --input-len 8064 --output-len 128 --kv-budget 760MiB
run 8k-f075 --num-prompts "${N8K:-12}" --input-len 8064 --output-len 128 --kv-budget 760MiB \
  --lazy-fraction 0.75
run 8k-b512 --num-prompts "${N8K:-12}" --input-len 8064 --output-len 128 --kv-budget 760MiB \
  --step-budget 15360

# Runs that only ONLY starts (scripts/gpu_check.sh; each would take 30-60 minutes per mode on 2
# vCPUs, seconds on a GPU). Budgets where the whole-sequence capacities meet the byte bound
# (3 / 4 at 2K = 1.33x, 5 / 8 at 4K = 1.6x, 4 / 7 at 8K = 1.75x), prompts in whole waves of both
# modes, and steps of 16384 tokens through every layer (491520 token-layers; vLLM's default
# max_num_batched_tokens on large GPUs is of that order) besides the default 2048.
for budget in 61440 491520; do
  only "2k-3-s$budget" --num-prompts 24 --input-len 2048 --output-len 128 --kv-budget 162938880 \
    --step-budget "$budget"
  only "4k-5-s$budget" --num-prompts 40 --input-len 4096 --output-len 128 --kv-budget 510935040 \
    --step-budget "$budget"
  only "8k-28-s$budget" --num-prompts 28 --input-len 8064 --output-len 128 --kv-budget 760MiB \
    --step-budget "$budget"
  only "8k-f075-24-s$budget" --num-prompts 24 --input-len 8064 --output-len 128 --kv-budget 760MiB \
    --lazy-fraction 0.75 --step-budget "$budget"
done
