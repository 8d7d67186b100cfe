#!/usr/bin/env bash
# Builds one libFuzzer target of tests/fuzz/ with clang (ASan + UBSan + coverage over the whole
# tree, cmake/sanitizers.cmake) in build-fuzz/ and runs it for a fixed time.
#
#   scripts/fuzz.sh TARGET [SECONDS] [extra libFuzzer flags...]   (default 60 seconds)
#   scripts/fuzz.sh --list                    the targets
#   scripts/fuzz.sh --gguf-seeds [REAL_MODEL] adds the first 16 KiB of REAL_MODEL (default: the
#                                             default model) to build-fuzz/corpus/gguf/
#
# TARGET is gguf, tokenizer, chat_template, safetensors, serve_config, openai_api, http_server,
# proto_conversion or grammar (tests/fuzz/<TARGET>_fuzz.cpp). The committed seeds in
# tests/fuzz/corpus/<TARGET>/ and the generated ones (GGUF and safetensors files: weights are never
# committed; build-fuzz/test_fixtures/fuzz/<TARGET>/, written by tests/fixtures/make_test_fixtures)
# are copied into build-fuzz/corpus/<TARGET>/, which the fuzzer grows
# and keeps between runs; the dictionary tests/fuzz/<TARGET>.dict is used when there is one. A
# crash leaves its input in build-fuzz/artifacts/<TARGET>/ and makes this script fail; re-run one
# with
#   build-fuzz/tests/fuzz/<TARGET>_fuzz FILE
# and commit it under tests/fuzz/regressions/<TARGET>/, where the normal suite replays it
# (ctest fuzz.<TARGET>.replay, built by any compiler). One process per run: the build machines
# have 2 cores. JOBS=N sets the build's parallelism (default: nproc).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$root/build-fuzz"
targets=(gguf tokenizer chat_template safetensors serve_config openai_api http_server proto_conversion
  grammar)

if [[ "${1:-}" == "--list" ]]; then
  printf '%s\n' "${targets[@]}"
  exit 0
fi

if [[ "${1:-}" == "--gguf-seeds" ]]; then
  # The head of a real file: real metadata, cut mid-vocabulary. Kept out of git (a slice of a
  # model); the synthetic GGUF seeds are generated with the build.
  model="${2:-$root/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
  mkdir -p "$out/corpus/gguf"
  head -c 16384 "$model" >"$out/corpus/gguf/real_model_head_16k.seed"
  ls -l "$out/corpus/gguf"
  exit 0
fi

target="${1:-}"
if [[ ! " ${targets[*]} " =~ " $target " ]]; then
  echo "usage: scripts/fuzz.sh TARGET [SECONDS] [libFuzzer flags...]; TARGET: ${targets[*]}" >&2
  exit 2
fi
seconds="${2:-60}"
shift 2 || shift $#

# The targets that read the default model load it once, at start.
case "$target" in
  tokenizer | chat_template | http_server) bash "$root/scripts/fetch_model.sh" ;;
esac

if [[ ! -f "$out/CMakeCache.txt" ]]; then
  CC="${CC:-clang}" CXX="${CXX:-clang++}" cmake -S "$root" -B "$out" -DCMAKE_BUILD_TYPE=Release \
    -DLIGHTSERVE_FUZZ=ON -DLIGHTSERVE_CUDA=OFF
fi
cmake --build "$out" -j"${JOBS:-$(nproc)}" --target "${target}_fuzz" test_fixtures

# Per target: the largest input worth mutating, and how long one input may take.
max_len=4096
timeout=10
case "$target" in
  gguf) max_len=32768 ;;
  http_server) max_len=2048 timeout=60 ;;  # one input may run a few short generations
esac

corpus="$out/corpus/$target"
artifacts="$out/artifacts/$target"
mkdir -p "$corpus" "$artifacts"
for seeds in "$root/tests/fuzz/corpus/$target" "$out/test_fixtures/fuzz/$target"; do
  if compgen -G "$seeds/*" >/dev/null; then
    cp -n "$seeds/"* "$corpus/"
  fi
done
dict=()
[[ -f "$root/tests/fuzz/$target.dict" ]] && dict=(-dict="$root/tests/fuzz/$target.dict")

log="$out/$target.log"
echo "[fuzz] $target for $seconds s (corpus $corpus: $(ls "$corpus" | wc -l) inputs); log $log"
rc=0
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
ASAN_OPTIONS=detect_leaks=1:halt_on_error=1 \
  "$out/tests/fuzz/${target}_fuzz" "$corpus" "${dict[@]}" -max_total_time="$seconds" \
  -rss_limit_mb=4096 -max_len="$max_len" -timeout="$timeout" -print_final_stats=1 \
  -artifact_prefix="$artifacts/" "$@" >"$log" 2>&1 || rc=$?
grep -v -E '^#[0-9]+.*(NEW|REDUCE|pulse)' "$log" | tail -40
execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo "?")
echo "[fuzz] $target: $seconds s, $execs executions, corpus $(ls "$corpus" | wc -l) inputs," \
  "$(ls "$artifacts" | wc -l) artifacts in $artifacts, exit $rc"
exit "$rc"
