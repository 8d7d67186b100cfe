#!/usr/bin/env bash
# The GGUF libFuzzer target: scripts/fuzz.sh gguf (kept for its old command lines).
#   scripts/fuzz_gguf.sh [SECONDS] [extra libFuzzer flags...]     (default 60 seconds)
#   scripts/fuzz_gguf.sh --seeds [REAL_MODEL]                     adds the real file's head
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ "${1:-}" == "--seeds" ]]; then
  shift
  exec bash "$here/fuzz.sh" --gguf-seeds "$@"
fi
exec bash "$here/fuzz.sh" gguf "$@"
