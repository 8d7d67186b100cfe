#!/usr/bin/env bash
# The one prepared run on a lent GPU machine (issue 12; device time is scarce: 15 minutes a
# session, start-up included, so this whole script is capped at BUDGET_S = 450 s by default and
# every step runs under `timeout`). Steps, in priority order, with their cost on an H100:
#   0. preflight: a GPU must be visible, else it stops at once (exit 2)          ~2 s
#   1. binaries: unpack .cache/gpu-bundle/lightserve-gpu.tar.xz (scripts/gpu_bundle.sh, made
#      where the project builds: the image lacks its Debian libraries), or use $BUILD;
#      build check: every library resolves, the tests hold the Cuda* suites        ~10 s
#   2. every Cuda* test: kernels_tests (each CUDA op, f16 and bf16 KV, against the CPU) and,
#      when the default model file is there, model_tests                          30-90 s
#   3. copy bandwidth (bench/copy_bandwidth: device-to-device copy, read-only kernel)   ~5 s
#   3b. decode attention's KV read rate at the 8B shape (attention_bench --shape llama-3-8b:
#      batch 1 at 8K / 32K, 16 at 8K / 16K, 64 at 4K, contiguous and paged) against step 3:
#      how far the decode kernel is from HBM bandwidth                              ~15-25 s
#   4. decode step vs the HBM roofline on the llama-3-8b dummy shape: runtime_bench at batch
#      1 / 16 / 32 / 64, one context for all (8192 where 64 sequences fit the card, else the largest
#      multiple of 1024 that does; an H100's 80 GB holds 64 × ~6K), f16 KV, each batch decoded
#      by the four paths of runtime_bench --fusion off,on --argmax host,device from the same
#      prefill (old = fusion off + host argmax; new = fusion on + device argmax: the A/B of this
#      session's kernels, never run before); then batch 16 with bf16 KV    ~120 s + ~50 s
#   6. llama.cpp's CUDA build against step 4 (issue 12's must-show: decode tok/s at batch 1 and
#      32): llama-batched-bench from the bundle (scripts/build_llamacpp_cuda.sh, packed by
#      gpu_bundle.sh) or $LLAMACPP_BENCH, on an f16 llama-3-8b-shaped GGUF that `lightserve
#      export` writes into /tmp in the background while step 2 runs (16 GB, ~15 s on 16 cores;
#      step 3 waits for it) or $LLAMACPP_GGUF; flash attention, f16 KV, all layers on the GPU,
#      step 4's context (-npp), 128 decode steps, batches 1 / 32 / 16 / 64 in that order (-npl;
#      -pps: the prompt is prefilled once and copied to each sequence's own KV stream, so decode
#      reads the same bytes as distinct prompts and prefill costs seconds)             ~40 s
#   4c. the same A/B on the default model's shape (dummy smollm2-135m: the launch-bound steps;
#      the GGUF is over what a call carries), and LIGHTSERVE_CUDA_PROFILE=1 on the new path
#      (GPU time per op, printed in the log)                                           ~20 s
#   4g. CUDA graphs of the decode step (issue 12; opt-in, never run before): runtime_bench
#      --graphs off,on at the 135M shape (context 512; here) and the 8B shape (context 2048;
#      after step 5, before 4b), batch 1 / 16 / 64, fusion on + device argmax; skipped when
#      the graph tests failed in step 2                                             ~20 s + ~60 s
#   4d. sampling on the device (issue 12): `lightserve bench --device-sampling off,on` at batch
#      64 on SAMPLING_SHAPE (default the dummy smollm2-135m: loads in seconds), greedy and
#      temperature + top-k 40: whole logits rows downloaded vs topk_rows' candidates  ~30 s
#   5. hybrid (f = 0.5, --plan none) vs full attention, `lightserve bench --compare` at 16K input,
#      KV arena sized by --gpu-memory-utilization 0.9 (filling the card), N16K prompts, OUT16K
#      output tokens                                                               ~180 s
#   7. the load tester against the daemon (issue 12's must-show "throughput per GPU, full vs
#      hybrid"): scripts/bench_serving.sh with lightserve serve on the dummy 8B shape, KV sized by
#      --gpu-memory-utilization, full then hybrid (f = 0.5), LOADTEST_INPUT / LOADTEST_OUTPUT
#      (8192 / 512) at concurrency LOADTEST_C (64), one request per user; output tok/s and their
#      ratio (a dummy byte vocabulary streams no text until the end: TTFT / TPOT not measured)
#                                                                                   ~150-250 s
# The estimates add up to far more than one device session (15 minutes, start-up included), so
# the steps come in two parts: PART=a (default) runs the must-shows, 2 3 4 6 5 (~450-500 s);
# PART=b the A/Bs and the load test, 2 3 3b 4c 4g 4d 4b 7; PART=all every step. Within a part,
# every step is capped by what is left of BUDGET_S, so the last ones are the first to be cut.
# Everything goes to OUT_DIR as three files (a device call returns at most 8): gpu_check.log
# (all output), tables.md (scripts/gpu_tables.py's tables, the llama.cpp comparison included)
# and results.tar.gz (per-step logs and JSON; not the unpacked binaries nor the GGUF).
#   bash scripts/gpu_check.sh [OUT_DIR]
# Environment: BUNDLE, BUILD (default build), MODEL (default models/SmolLM2-135M-Instruct.Q4_1.gguf,
# for model_tests), BUDGET_S (450), UTIL (0.9), N16K (48), OUT16K (512), SKIP (steps to skip,
# e.g. "5 6"; 4c, 4d and 4g are their own), SAMPLING_SHAPE (smollm2-135m; llama-3-8b for its 128K
# vocabulary, which costs the 8B dummy load), LLAMACPP_BENCH / LLAMACPP_GGUF (step 6's binary and
# model, default the bundle's and one written here), LLAMACPP_NPL (1,32,16,64), LLAMACPP_TG (128),
# EXPORT_WAIT_S (90: how long step 3 waits for the GGUF).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
OUT_DIR="${1:-$ROOT/.cache/gpu-check}"
BUNDLE="${BUNDLE:-$ROOT/.cache/gpu-bundle/lightserve-gpu.tar.xz}"
BUILD="${BUILD:-build}"
MODEL="${MODEL:-$ROOT/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
BUDGET_S="${BUDGET_S:-450}"
UTIL="${UTIL:-0.9}"
N16K="${N16K:-48}"
OUT16K="${OUT16K:-512}"
PART="${PART:-a}"
case "$PART" in
  a) SKIP=" 3b 4c 4g 4d 4b 7 ${SKIP:-} " ;;
  b) SKIP=" 4 5 6 ${SKIP:-} " ;;
  all) SKIP=" ${SKIP:-} " ;;
  *)
    echo "error: PART must be a, b or all, got '$PART'" >&2
    exit 2
    ;;
esac
LLAMACPP_NPL="${LLAMACPP_NPL:-1,32,16,64}"
LLAMACPP_TG="${LLAMACPP_TG:-128}"
SHAPE=llama-3-8b
KV_MIB_PER_TOKEN_X1024=128  # llama-3-8b: 32 layers × 8 KV heads × 128 × (K, V) × 2 bytes = 128 KiB

# 0. Preflight: nothing below can run without a GPU.
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "error: no NVIDIA GPU is visible here (nvidia-smi is missing or lists no device):" \
    "scripts/gpu_check.sh runs only on a machine with one (a lent H100 / H200); nothing was run" >&2
  exit 2
fi
mkdir -p "$OUT_DIR"
WORK=$(mktemp -d /tmp/gpu-check.XXXXXX)
LOG="$OUT_DIR/gpu_check.log"
: >"$LOG"
exec > >(tee -a "$LOG") 2>&1
DEADLINE=$((SECONDS + BUDGET_S))
status=0

finish() {
  if [ -n "${TABLES:-}" ] && command -v python3 >/dev/null; then
    python3 "$ROOT/scripts/gpu_tables.py" "$WORK" >"$OUT_DIR/tables.md" 2>&1
    cat "$OUT_DIR/tables.md"
  fi
  [ -n "${EXPORT_PID:-}" ] && kill "$EXPORT_PID" 2>/dev/null
  [ -n "${GGUF_DIR:-}" ] && rm -rf "$GGUF_DIR"
  tar -C "$WORK" --exclude=./lightserve-gpu -czf "$OUT_DIR/results.tar.gz" . 2>/dev/null
  echo "gpu_check: done in ${SECONDS} s, status $status"
  exit "$status"
}

# step NAME CAP_S CMD...: runs CMD under timeout, capped by what is left of the budget (minus 10 s
# for the tables); its output goes to the log and to WORK/NAME.txt. Records NAME, rc, seconds.
step() {
  local name=$1 cap=$2
  shift 2
  local left=$((DEADLINE - SECONDS - 10))
  if [ "$left" -lt 20 ]; then
    echo "== $name: skipped, ${left} s of the budget left" | tee -a "$WORK/steps.txt"
    return 0
  fi
  [ "$cap" -gt "$left" ] && cap=$left
  echo "== $name (cap ${cap} s): $*"
  local start=$SECONDS
  timeout --kill-after=10 "$cap" "$@" 2>&1 | tee "$WORK/$name.txt"
  local rc=${PIPESTATUS[0]}
  echo "$name rc=$rc $((SECONDS - start)) s" | tee -a "$WORK/steps.txt"
  if [ "$rc" -ne 0 ]; then
    status=1
    [ "$rc" -eq 124 ] && echo "== $name: timed out after ${cap} s"
  fi
  return 0
}
skipped() { [[ "$SKIP" == *" $1 "* ]]; }

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem \
  --format=csv | tee "$WORK/gpu.txt"
GPU_MIB=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1 | tr -dc 0-9)

# 1. Binaries and the build check.
if [ -f "$BUNDLE" ]; then
  tar -C "$WORK" -xJf "$BUNDLE" || {
    echo "error: cannot unpack $BUNDLE" >&2
    exit 1
  }
  BIN="$WORK/lightserve-gpu/bin"
  cublas_dir=""
  for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
    if [ -e "$d/libcublas.so.13" ]; then
      cublas_dir=$d
      break
    fi
  done
  if [ -z "$cublas_dir" ]; then
    found=$(timeout 20 find / -name 'libcublas.so.13' -not -path '/proc/*' 2>/dev/null | head -1)
    cublas_dir=$(dirname "${found:-/nonexistent/x}")
  fi
  export LD_LIBRARY_PATH="$WORK/lightserve-gpu/lib:$cublas_dir:${LD_LIBRARY_PATH:-}"
  echo "bundle: $(head -1 "$WORK/lightserve-gpu/COMMIT"), cuBLAS from $cublas_dir"
  if [ -z "${LLAMACPP_BENCH:-}" ] && [ -x "$WORK/lightserve-gpu/llamacpp/llama-batched-bench" ]; then
    LLAMACPP_BENCH=$WORK/lightserve-gpu/llamacpp/llama-batched-bench
    echo "llama.cpp: $(tr '\n' ' ' <"$WORK/lightserve-gpu/llamacpp/VERSION")"
  fi
  LIGHTSERVE=$BIN/lightserve KTESTS=$BIN/kernels_tests MTESTS=$BIN/model_tests
  LOADTEST=$BIN/lightserve-loadtest
  RUNTIME=$BIN/runtime_bench COPYBW=$BIN/copy_bandwidth ATTBENCH=$BIN/attention_bench
elif [ -x "$BUILD/lightserve" ]; then
  LIGHTSERVE=$BUILD/lightserve KTESTS=$BUILD/tests/kernels_tests MTESTS=$BUILD/tests/model_tests
  LOADTEST=$BUILD/lightserve-loadtest
  RUNTIME=$BUILD/bench/runtime_bench COPYBW=$BUILD/bench/copy_bandwidth
  ATTBENCH=$BUILD/bench/attention_bench
else
  echo "error: neither $BUNDLE nor $BUILD/lightserve: run scripts/gpu_bundle.sh where the" \
    "project builds and carry .cache/gpu-bundle" >&2
  exit 1
fi
for b in "$LIGHTSERVE" "$LOADTEST" "$KTESTS" "$MTESTS" "$RUNTIME" "$COPYBW" "$ATTBENCH"; do
  missing=$(ldd "$b" 2>&1 | grep 'not found')
  if [ ! -x "$b" ] || [ -n "$missing" ]; then
    echo "error: $b cannot run here: ${missing:-missing}" >&2
    exit 1
  fi
done
# (the list first: `grep -q` closing the pipe early would fail the pipeline under pipefail)
test_list=$("$KTESTS" --gtest_list_tests)
if ! grep -q '^Cuda' <<<"$test_list"; then
  echo "error: $KTESTS has no Cuda* tests: the binaries were built without nvcc" >&2
  exit 1
fi
TABLES=1
trap finish EXIT

# 6, first part: the GGUF llama.cpp loads, written while step 2's tests run (CPU and disk work,
# the GPU untouched; step 3 waits for it so no timed step shares the host with it). The dummy
# model's weights, f16 (the type our backend holds on the GPU), into /tmp outside WORK (16 GB).
if ! skipped 6 && [ -n "${LLAMACPP_BENCH:-}" ] && [ -z "${LLAMACPP_GGUF:-}" ]; then
  GGUF_DIR=$(mktemp -d /tmp/gpu-check-gguf.XXXXXX)
  free_gib=$(($(df -Pk "$GGUF_DIR" | awk 'NR == 2 {print $4}') >> 20))
  if [ "$free_gib" -ge 20 ]; then
    LLAMACPP_GGUF=$GGUF_DIR/$SHAPE-f16.gguf
    echo "== gguf_write (background): $LLAMACPP_GGUF"
    nice -n 5 "$LIGHTSERVE" export --load-format dummy --shape "$SHAPE" --dummy-type f16 -q \
      -o "$LLAMACPP_GGUF" >"$WORK/gguf_write.txt" 2>&1 &
    EXPORT_PID=$!
  else
    echo "== gguf_write: skipped, ${free_gib} GiB free in /tmp (16 GB needed)"
  fi
fi
# Waits (at most $1 s) for the background export; on failure or time-out step 6 is skipped.
wait_for_export() {
  [ -n "${EXPORT_PID:-}" ] || return 0
  local waited=0
  while kill -0 "$EXPORT_PID" 2>/dev/null && [ "$waited" -lt "$1" ]; do
    sleep 1
    waited=$((waited + 1))
  done
  if kill -0 "$EXPORT_PID" 2>/dev/null; then
    kill "$EXPORT_PID"
    echo "== gguf_write: still running after ${1} s more, stopped; step 6 is skipped"
    LLAMACPP_GGUF=""
  elif ! wait "$EXPORT_PID"; then
    echo "== gguf_write failed: $(tail -3 "$WORK/gguf_write.txt")"
    LLAMACPP_GGUF=""
  else
    cat "$WORK/gguf_write.txt"
  fi
  EXPORT_PID=""
}

# 2. Every Cuda* test.
step kernels_tests 240 "$KTESTS" --gtest_filter='Cuda*' --gtest_color=no
if [ -f "$MODEL" ]; then
  LIGHTSERVE_TEST_MODEL="$MODEL" step model_tests 150 "$MTESTS" --gtest_filter='Cuda*' \
    --gtest_color=no
else
  echo "== model_tests: skipped, no model at $MODEL (the GGUF is over what a call carries)"
fi
# Launch fusion had never run before this check: if its tests fail, every later step runs the
# unfused path (the A/B then times fusion off only), so the headline numbers stay valid.
FUSION=off,on
if grep -q 'FAILED.*CudaFusion\|FAILED.*FusedLaunches' "$WORK"/kernels_tests.txt \
  "$WORK"/model_tests.txt 2>/dev/null; then
  echo "== launch fusion failed its tests: LIGHTSERVE_CUDA_FUSED=0 from here on"
  export LIGHTSERVE_CUDA_FUSED=0
  FUSION=off
fi

# 3. The roofline's denominator.
wait_for_export "${EXPORT_WAIT_S:-90}"
step copy_bandwidth 30 "$COPYBW" 2048 --json "$WORK/copy_bandwidth.json"
if ! skipped 3b; then
  step attention_8b 45 "$ATTBENCH" --device cuda --shape "$SHAPE" --min-ms 50 --reps 3
fi

# 4. Decode step time at batch 1 / 16 / 32 / 64 (every sequence decoding), f16 weights resident.
# The context: 8192, or what lets 64 sequences + the 8B weights (~15 GiB) + 5 GiB fit 92% of
# the card.
GEN=32
kv_tokens_each=$(((GPU_MIB * 92 / 100 - 20 * 1024) * 1024 / KV_MIB_PER_TOKEN_X1024 / 64))
CONTEXT=$(((kv_tokens_each - GEN) / 1024 * 1024))
[ "$CONTEXT" -gt 8192 ] && CONTEXT=8192
echo "decode context: $CONTEXT tokens (GPU memory ${GPU_MIB} MiB)"
if ! skipped 4 && [ "$CONTEXT" -ge 1024 ]; then
  step decode_f16 200 "$RUNTIME" --device cuda --shape "$SHAPE" --prefill '' --decode 1,16,32,64 \
    --context "$CONTEXT" --gen "$GEN" --reps 1 --fusion "$FUSION" --argmax host,device \
    --json "$WORK/decode_f16.json"
fi
# 6. llama.cpp's CUDA build at step 4's shape, context and batch sizes (tables: decode tok/s ours
# vs llama.cpp). -c: every sequence its own KV stream of CONTEXT + TG cells.
if skipped 6; then
  echo "== llamacpp: skipped (SKIP)"
elif [ -n "${LLAMACPP_BENCH:-}" ] && [ -n "${LLAMACPP_GGUF:-}" ] && [ "$CONTEXT" -ge 1024 ]; then
  npl_max=$(tr ',' '\n' <<<"$LLAMACPP_NPL" | sort -n | tail -1)
  step llamacpp 90 "$LLAMACPP_BENCH" -m "$LLAMACPP_GGUF" -c $((npl_max * (CONTEXT + LLAMACPP_TG))) \
    -b 2048 -ub 512 -npp "$CONTEXT" -ntg "$LLAMACPP_TG" -npl "$LLAMACPP_NPL" -pps -fa on \
    -ctk f16 -ctv f16 -ngl 99 --output-format jsonl
else
  echo "== llamacpp: skipped (no llama.cpp CUDA build in the bundle nor LLAMACPP_BENCH, or no GGUF;" \
    "see the header)"
fi

# 4c. The A/B on the default model's shape, whose steps are launch-bound, and where the GPU time
# goes on the new path.
if ! skipped 4c; then
  step ab_small 40 "$RUNTIME" --device cuda --shape smollm2-135m --prefill '' \
    --decode 1,16,64 --context 512 --gen 64 --reps 2 --fusion "$FUSION" --argmax host,device \
    --json "$WORK/ab_small.json"
  LIGHTSERVE_CUDA_PROFILE=1 step profile_small 30 "$RUNTIME" --device cuda \
    --shape smollm2-135m --prefill '' --decode 16 --context 512 --gen 64 --reps 1 --argmax device
fi

# 4g. CUDA graphs of the decode step, off vs on (the 'on' rows say how many timed steps ran as
# graphs), at the 135M shape here and at the 8B shape after step 5. Only when their tests passed:
# a replay that differs from its launches is not a speed-up.
GRAPHS_AB=1
if skipped 4g || grep -q 'FAILED.*CudaGraphs\|FAILED.*RecordedDecodeSteps' "$WORK"/kernels_tests.txt \
  "$WORK"/model_tests.txt 2>/dev/null; then
  echo "== graphs: skipped or their tests failed (see kernels_tests / model_tests): no A/B"
  GRAPHS_AB=0
fi
if [ "$GRAPHS_AB" = 1 ]; then
  step graphs_small 40 "$RUNTIME" --device cuda --shape smollm2-135m --prefill '' \
    --decode 1,16,64 --context 512 --gen 64 --reps 1 --argmax device --graphs off,on \
    --json "$WORK/graphs_small.json"
fi

# 4d. Sampling on the device (issue 12): the same decode-dominated bench with whole logits rows
# (off) and with the sampled rows' top-k candidates (on), greedy and top-k 40, in one process each.
if ! skipped 4d; then
  for sampling in greedy topk; do
    args=()
    [ "$sampling" = topk ] && args=(--temperature 0.8 --top-k 40)
    step "sampling_$sampling" 60 "$LIGHTSERVE" bench -q --device cuda --load-format dummy \
      --shape "${SAMPLING_SHAPE:-smollm2-135m}" --num-prompts 64 --max-running 64 \
      --input-len 128 --output-len 128 --kv-budget 4GiB "${args[@]}" --device-sampling off,on \
      --json "$WORK/sampling_$sampling.json"
  done
fi

# 5. LightTransfer's throughput per GPU at 16K: hybrid (f = 0.5) over full attention.
if ! skipped 5; then
  step hybrid_16k 300 "$LIGHTSERVE" bench --device cuda --load-format dummy --shape "$SHAPE" \
    --num-prompts "$N16K" --max-running "$N16K" --input-len 16384 --output-len "$OUT16K" \
    --gpu-memory-utilization "$UTIL" --lazy-fraction 0.5 --plan none --compare \
    --json "$WORK/hybrid_16k.json"
fi

# 4g at the 8B shape (a second load of the dummy 8B model: after the headline of step 5).
if [ "$GRAPHS_AB" = 1 ]; then
  step graphs_8b 90 "$RUNTIME" --device cuda --shape "$SHAPE" --prefill '' --decode 1,16,64 \
    --context 2048 --gen 16 --reps 1 --argmax device --graphs off,on \
    --json "$WORK/graphs_8b.json"
fi

# 4b. bf16 KV at batch 16 against step 4's f16 row (the default stays f16 unless bf16 is no
# slower and no less accurate).
if ! skipped 4b && [ "$CONTEXT" -ge 1024 ]; then
  step decode_bf16 100 "$RUNTIME" --device cuda --shape "$SHAPE" --prefill '' --decode 16 \
    --context "$CONTEXT" --gen "$GEN" --reps 1 --kv-dtype bf16 --json "$WORK/decode_bf16.json"
fi

# 7. The load tester against the daemon: full, then hybrid (f = 0.5), each a lightserve serve on
# the dummy 8B shape with the KV arena filling the card, the same closed-loop load.
if ! skipped 7; then
  step loadtest 250 env LIGHTSERVE="$LIGHTSERVE" LOADTEST="$LOADTEST" SERVERS="full hybrid" \
    CONCURRENCY="${LOADTEST_C:-64}" INPUT_LEN="${LOADTEST_INPUT:-8192}" \
    OUTPUT_LEN="${LOADTEST_OUTPUT:-512}" REQUESTS_PER_USER=1 WARMUP=0 TOKENS_PER_WORD=0 \
    CONTEXT_MARGIN=512 \
    LIGHTSERVE_MODEL_ARGS="--device cuda --load-format dummy --shape $SHAPE" \
    LIGHTSERVE_KV_ARGS="--gpu-memory-utilization $UTIL" \
    bash "$ROOT/scripts/bench_serving.sh" "$WORK/loadtest"
fi

