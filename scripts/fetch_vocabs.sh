#!/usr/bin/env bash
# Put llama.cpp's vocabulary-only GGUF files and their test strings at models/vocab/ (git-ignored):
# the tokenizer goldens of other model families (tests/model/tokenizer_families_test.cpp).
# They ship in the pinned llama-cpp-python sdist (vendor/llama.cpp/models/), the same sources
# scripts/build_llamacpp.sh builds the reference from; the sdist is kept in .cache/llama.cpp/.
# No-op when every file is present. Test data only: serving never needs it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PY_VERSION="0.3.36"
SDIST="$ROOT/.cache/llama.cpp/llama_cpp_python-${PY_VERSION}.tar.gz"
SHA256="832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
DEST="models/vocab"
VOCABS=(llama-spm llama-bpe qwen2 phi-3)

log() { echo "[fetch_vocabs] $*"; }

missing=0
for v in "${VOCABS[@]}"; do
  for ext in gguf gguf.inp gguf.out; do
    [[ -f "$DEST/ggml-vocab-$v.$ext" ]] || missing=1
  done
done
if [[ $missing -eq 0 ]]; then
  log "present: $DEST (${VOCABS[*]})"
  exit 0
fi

mkdir -p "$(dirname "$SDIST")" "$DEST"
if [[ ! -f "$SDIST" ]] || [[ "$(sha256sum "$SDIST" | cut -d' ' -f1)" != "$SHA256" ]]; then
  log "downloading llama-cpp-python==${PY_VERSION} sdist from PyPI (76 MB)"
  rm -f "$SDIST"
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
    "llama-cpp-python==${PY_VERSION}" -d "$(dirname "$SDIST")"
fi
got="$(sha256sum "$SDIST" | cut -d' ' -f1)"
[[ "$got" == "$SHA256" ]] || { log "ERROR: sdist sha256 $got, want $SHA256"; exit 1; }

members=()
for v in "${VOCABS[@]}"; do
  for ext in gguf gguf.inp gguf.out; do
    members+=("llama_cpp_python-${PY_VERSION}/vendor/llama.cpp/models/ggml-vocab-$v.$ext")
  done
done
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
tar -xzf "$SDIST" -C "$tmp" "${members[@]}"
mv -f "$tmp/llama_cpp_python-${PY_VERSION}/vendor/llama.cpp/models/"* "$DEST/"
log "installed $DEST: ${VOCABS[*]}"
