#!/usr/bin/env bash
# Builds the GGUF libFuzzer target with clang (ASan + UBSan) and runs it.
#
#   scripts/fuzz_gguf.sh [SECONDS] [extra libFuzzer flags...]     (default 60 seconds)
#
# The build is one clang++ command over the three sources the target needs, so it works even when
# the rest of the project does not build with clang; the same target exists in CMake as
# `gguf_fuzz` (CC=clang CXX=clang++ cmake -DLIGHTSERVE_FUZZ=ON). The committed seeds in
# tests/fuzz/corpus/gguf/ are copied into build-fuzz/gguf_corpus/, which the fuzzer grows; crash
# reproducers land in build-fuzz/gguf_artifacts/. Re-run one with: build-fuzz/gguf_fuzz FILE
# To regenerate the seeds: scripts/fuzz_gguf.sh --seeds [REAL_MODEL]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/build-fuzz"
mkdir -p "$out"
CXX="${CXX:-clang++}"
common=(-std=c++20 -g -O1 -Wall -Wextra -Werror -Wno-unused-parameter -I"$root")

if [[ "${1:-}" == "--seeds" ]]; then
  "$CXX" "${common[@]}" -o "$out/make_gguf_seeds" "$root/tests/fuzz/make_gguf_seeds.cpp" \
    "$root/kernels/dtype.cpp"
  "$out/make_gguf_seeds" "$root/tests/fuzz/corpus/gguf" ${2:+"$2"}
  ls -l "$root/tests/fuzz/corpus/gguf"
  exit 0
fi

seconds="${1:-60}"
shift || true

"$CXX" "${common[@]}" -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -fno-omit-frame-pointer -o "$out/gguf_fuzz" "$root/tests/fuzz/gguf_fuzz.cpp" \
  "$root/model/gguf.cpp" "$root/model/config.cpp" "$root/kernels/dtype.cpp"

mkdir -p "$out/gguf_corpus" "$out/gguf_artifacts"
cp -n "$root"/tests/fuzz/corpus/gguf/* "$out/gguf_corpus/" 2>/dev/null || true
cd "$out"
# Fork mode would use more cores; one process keeps the 2-core build machines usable.
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
ASAN_OPTIONS=detect_leaks=1 \
  ./gguf_fuzz gguf_corpus -dict="$root/tests/fuzz/gguf.dict" -max_total_time="$seconds" \
  -rss_limit_mb=2048 -max_len=32768 -timeout=10 -print_final_stats=1 \
  -artifact_prefix=gguf_artifacts/ "$@"
