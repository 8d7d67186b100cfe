#!/usr/bin/env bash
# ctest model.export_llamacpp: llama.cpp loads and runs what `lightserve export` writes (issue 12:
# scripts/gpu_check.sh step 6 gives llama.cpp's CUDA build an exported llama-3-8b-shaped dummy).
# Here at a small shape with the 8B's vocabulary (128,256 byte-level SentencePiece tokens) and
# head size (128), f16 weights, through the CPU reference build (scripts/build_llamacpp.sh):
#   - llama-batched-bench with step 6's flags (flash attention, f16 KV, -pps, jsonl) reports a
#     row per batch size with a positive decode rate, and llama.cpp read the shape we wrote;
#   - llama-simple generates tokens from it.
# Skipped (77) when the reference build is absent.
#   llamacpp_export_test.sh LIGHTSERVE LLAMACPP_BIN_DIR
set -uo pipefail
LIGHTSERVE=$1
LLAMACPP_BIN=$2
for tool in llama-batched-bench llama-simple; do
  if [ ! -x "$LLAMACPP_BIN/$tool" ]; then
    echo "skipped: no $LLAMACPP_BIN/$tool (bash scripts/build_llamacpp.sh builds it)"
    exit 77
  fi
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() {
  echo "FAIL: $*"
  exit 1
}
shape="layers=2,hidden=256,heads=2,kv_heads=1,ffn=512,vocab=128256,context=4096"
"$LIGHTSERVE" export --load-format dummy --shape "$shape" --dummy-type f16 -o "$tmp/tiny.gguf" \
  -q || fail "lightserve export exited $?"

"$LLAMACPP_BIN/llama-batched-bench" -m "$tmp/tiny.gguf" -c $((4 * (64 + 16))) -b 2048 -ub 512 \
  -npp 64 -ntg 16 -npl 1,4 -pps -fa on -ctk f16 -ctv f16 -ngl 0 -t 2 --output-format jsonl -v \
  >"$tmp/bench.out" 2>&1 || {
  tail -30 "$tmp/bench.out"
  fail "llama-batched-bench exited $?"
}
grep '^{' "$tmp/bench.out" >"$tmp/bench.jsonl"
cat "$tmp/bench.jsonl"
python3 - "$tmp/bench.jsonl" <<'PY' || fail "llama-batched-bench's rows"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
by_pl = {r["pl"]: r for r in rows}
assert sorted(by_pl) == [1, 4], f"rows for batch sizes {sorted(by_pl)}, expected [1, 4]"
for pl, r in by_pl.items():
    assert r["pp"] == 64 and r["tg"] == 16 and r["flash_attn"] == 1, r
    assert r["speed_tg"] > 0, f"batch {pl}: decode rate {r['speed_tg']}"
PY
for expected in "n_layer += 2$" "n_embd += 256$" "n_head_kv += 1$" "n_embd_head_k += 128$" \
  "n_vocab += 128256$" "vocab type += SPM$" "type +f16: +16 tensors$"; do
  grep -Eq "$expected" "$tmp/bench.out" || {
    grep -E "print_info|llama_model_loader: - type" "$tmp/bench.out" | head -40
    fail "llama.cpp's load log lacks '$expected'"
  }
done

"$LLAMACPP_BIN/llama-simple" -m "$tmp/tiny.gguf" -n 8 "hello" >"$tmp/simple.out" \
  2>"$tmp/simple.log" || {
  tail -20 "$tmp/simple.log"
  fail "llama-simple exited $?"
}
grep -Eq "decoded 8 tokens" "$tmp/simple.log" || {
  tail -20 "$tmp/simple.log"
  fail "llama-simple did not decode 8 tokens"
}
echo "ok: llama.cpp loads and runs the exported GGUF"
