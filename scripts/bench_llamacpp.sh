#!/usr/bin/env bash
# Benchmark the reference llama.cpp (scripts/build_llamacpp.sh) on the default model, 2 threads.
#   bash scripts/bench_llamacpp.sh [out.json]      (default: .cache/llama.cpp/bench.json)
# Measures prefill tok/s at 512 and 2048 (llama-bench), decode tok/s at batch 1 (llama-bench),
# aggregate decode tok/s at batch 1, 8, 32 (llama-batched-bench, S_TG column), and the peak
# resident memory of each run (/usr/bin/time -v). Writes JSON with the exact commands and prints
# a table. Takes a few minutes on 2 cores; run on an otherwise idle machine (load is recorded).
#
# Env: THREADS (default 2), MODEL, REPS (default 3), REPACK (default 1 = llama.cpp's default:
# extra weight buffers, i.e. ggml's AMX kernels for Q4_1 on AMX CPUs; 0 = --no-repack, the
# portable AVX2/AVX-512 vec_dot path). A GCC-12-built llama.cpp crashes with REPACK=1 on AMX
# machines (see build_llamacpp.sh), so REPACK defaults to 0 for a GCC build.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

OUT="${1:-$ROOT/.cache/llama.cpp/bench.json}"
THREADS="${THREADS:-2}"
REPS="${REPS:-3}"
REPACK="${REPACK:-}"
MODEL="${MODEL:-$ROOT/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
BIN="$ROOT/.cache/llama.cpp/bin"

log() { echo "[bench_llamacpp] $*" >&2; }

[[ -x /usr/bin/time ]] || { log "ERROR: /usr/bin/time missing (bash scripts/install_deps.sh)"; exit 1; }
[[ -f "$MODEL" ]] || bash scripts/fetch_model.sh
bash scripts/build_llamacpp.sh >&2
if [[ -z "$REPACK" ]]; then
  if grep -q "^compiler: gcc" "$ROOT/.cache/llama.cpp/VERSION"; then REPACK=0; else REPACK=1; fi
fi

if [[ "$REPACK" == 1 ]]; then BENCH_RP=(--repack 1); BB_RP=(); else BENCH_RP=(--repack 0); BB_RP=(-nr); fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

PREFILL_CMD=("$BIN/llama-bench" -m "$MODEL" -p 512,2048 -n 0 -t "$THREADS" -r "$REPS" "${BENCH_RP[@]}" -o json)
DECODE_CMD=("$BIN/llama-bench" -m "$MODEL" -p 0 -n 128 -t "$THREADS" -r "$REPS" "${BENCH_RP[@]}" -o json)
BATCHED_CMD=("$BIN/llama-batched-bench" -m "$MODEL" -c 8192 -b 2048 -ub 512 -npp 128 -ntg 128
             -npl 1,8,32 -t "$THREADS" "${BB_RP[@]}" --output-format jsonl)

run() {  # name, command...: stdout -> $work/name.out, stderr -> name.err, time -v -> name.time
  local name="$1"; shift
  log "running $name: $*"
  if ! /usr/bin/time -v -o "$work/$name.time" "$@" > "$work/$name.out" 2> "$work/$name.err"; then
    tail -20 "$work/$name.err" >&2
    log "ERROR: $name failed"
    exit 1
  fi
  printf '%q ' "$@" > "$work/$name.cmd"
}

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
run prefill "${PREFILL_CMD[@]}"
run decode "${DECODE_CMD[@]}"
run batched "${BATCHED_CMD[@]}"
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"

mkdir -p "$(dirname "$OUT")"
python3 - "$work" "$OUT" "$ROOT/.cache/llama.cpp/VERSION" "$THREADS" "$REPACK" "$LOAD_BEFORE" "$LOAD_AFTER" <<'EOF'
import json, os, platform, re, sys, time
work, out, version_file, threads, repack, load_before, load_after = sys.argv[1:]

def rss_kib(name):
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", open(f"{work}/{name}.time").read())
    return int(m.group(1)) if m else None

def cmd(name):
    return open(f"{work}/{name}.cmd").read().strip()

def bench_json(name):
    return json.load(open(f"{work}/{name}.out"))

def cpu_model():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()

res = {"prefill": {}, "decode": {}}
raw = {}
pf = bench_json("prefill"); raw["prefill"] = pf
for r in pf:
    res["prefill"][str(r["n_prompt"])] = {"tokens_per_s": r["avg_ts"], "stddev": r["stddev_ts"]}
dc = bench_json("decode"); raw["decode"] = dc
for r in dc:
    res["decode"]["1"] = {"tokens_per_s": r["avg_ts"], "stddev": r["stddev_ts"],
                          "source": "llama-bench tg128"}
bb = []
for stream in ("out", "err"):
    for line in open(f"{work}/batched.{stream}"):
        line = line.strip()
        if line.startswith("{") and '"speed_tg"' in line:
            bb.append(json.loads(line))
raw["batched"] = bb
if not bb:
    sys.exit("no llama-batched-bench jsonl rows found")
res["decode_batched"] = {str(r["pl"]): {"aggregate_tokens_per_s": r["speed_tg"],
                                        "prefill_tokens_per_s": r["speed_pp"],
                                        "pp": r["pp"], "tg": r["tg"]} for r in bb}

pf0 = pf[0] if pf else {}
doc = {
    "what": "reference llama.cpp on the default model",
    "llama_cpp_version": open(version_file).read().strip().splitlines(),
    "model": os.path.basename(pf0.get("model_filename", "")),
    "machine": {"cpu": cpu_model(), "nproc": os.cpu_count(), "kernel": platform.release(),
                "loadavg_before": load_before, "loadavg_after": load_after,
                "llama_cpu_info": pf0.get("cpu_info"), "backends": pf0.get("backends")},
    "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "threads": int(threads),
    "repack": int(repack),
    "flash_attn": pf0.get("flash_attn", "auto (llama.cpp default)"),
    "results": res,
    "peak_rss_kib": {n: rss_kib(n) for n in ("prefill", "decode", "batched")},
    "commands": {n: cmd(n) for n in ("prefill", "decode", "batched")},
    "raw": raw,
}
with open(out + ".tmp", "w") as f:
    json.dump(doc, f, indent=1)
os.replace(out + ".tmp", out)

print(f"llama.cpp reference, {doc['machine']['cpu']}, {threads} threads, repack={repack}, "
      f"load {load_before} -> {load_after}")
print(f"{'measure':<28} {'tok/s':>10} {'peak RSS MiB':>13}")
rss = doc["peak_rss_kib"]
for k, v in res["prefill"].items():
    print(f"{'prefill pp' + k:<28} {v['tokens_per_s']:>10.1f} {rss['prefill'] / 1024:>13.1f}")
for k, v in res["decode"].items():
    print(f"{'decode batch ' + k + ' (bench)':<28} {v['tokens_per_s']:>10.1f} {rss['decode'] / 1024:>13.1f}")
for k, v in res["decode_batched"].items():
    print(f"{'decode batch ' + k + ' (S_TG)':<28} {v['aggregate_tokens_per_s']:>10.1f} {rss['batched'] / 1024:>13.1f}")
print(f"wrote {out}")
EOF
