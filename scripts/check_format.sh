#!/usr/bin/env bash
# Fails when a tracked C++/CUDA file differs from what clang-format (.clang-format) makes of it.
# Run by scripts/test.sh (and so by CI). Fix with:
#   git ls-files '*.h' '*.cpp' '*.cu' '*.cuh' | xargs clang-format -i
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
files=$(git ls-files '*.h' '*.cpp' '*.cu' '*.cuh')
if ! out=$(echo "$files" | xargs clang-format --dry-run 2>&1); then
  echo "$out" | head -40; exit 1
fi
if [[ -n "$out" ]]; then
  echo "$out" | grep -E "^[^ ].*warning" | cut -d: -f1 | sort -u | sed 's/^/  not formatted: /'
  echo "FAILED: run clang-format -i on the files above" >&2
  exit 1
fi
echo "[check_format] $(echo "$files" | wc -l) files formatted"
