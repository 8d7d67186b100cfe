#!/usr/bin/env bash
# Regenerate the golden files in tests/golden/ from the reference llama.cpp (pinned PyPI
# llama-cpp-python==0.3.36, whose wheel pip builds from source: slow, once) on the default model.
# CI never runs this; it only reads the committed goldens.
#   bash scripts/gen_goldens.sh
#   GOLDEN_PYTHON=/opt/goldenvenv/bin/python bash scripts/gen_goldens.sh   # reuse a ready venv
# Runs scripts/goldens/generate_goldens.py (generation.json) and, when present,
# scripts/goldens/tokenizer_goldens.py (tokenizer goldens).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

LLAMA_CPP_PYTHON="llama-cpp-python==0.3.36"
VENV="$ROOT/.cache/goldens-venv"
REQS="$ROOT/scripts/goldens/requirements.txt"

log() { echo "[gen_goldens] $*"; }

bash scripts/fetch_model.sh

if [[ -n "${GOLDEN_PYTHON:-}" ]]; then
  PY="$GOLDEN_PYTHON"
  log "using GOLDEN_PYTHON=$PY (not modified)"
else
  PY="$VENV/bin/python"
  stamp="$VENV/.ready-$(echo "$LLAMA_CPP_PYTHON" | tr '=' '-')"
  reqs_hash="none"
  [[ -f "$REQS" ]] && reqs_hash="$(sha256sum "$REQS" | cut -c1-16)"
  if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$reqs_hash" ]]; then
    log "creating venv $VENV (pip builds llama.cpp from source: ~10+ minutes on 2 cores)"
    python3 -m venv "$VENV"
    "$PY" -m pip install --quiet --upgrade pip
    # No curl/openssl in the wheel's llama.cpp; default (native) CPU flags, like the reference.
    CMAKE_ARGS="${CMAKE_ARGS:--DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF}" \
      "$PY" -m pip install --quiet --no-binary llama-cpp-python "$LLAMA_CPP_PYTHON" numpy
    if [[ -f "$REQS" ]]; then
      "$PY" -m pip install --quiet -r "$REQS"
    fi
    echo "$reqs_hash" > "$stamp"
  fi
fi

"$PY" -c "import llama_cpp, numpy; assert llama_cpp.__version__ == '0.3.36', llama_cpp.__version__"

log "generation goldens"
"$PY" scripts/goldens/generate_goldens.py --model "$ROOT/models/SmolLM2-135M-Instruct.Q4_1.gguf" \
  --out "$ROOT/tests/golden/generation.json"

if [[ -f scripts/goldens/tokenizer_goldens.py ]]; then
  log "tokenizer goldens"
  "$PY" scripts/goldens/tokenizer_goldens.py --model "$ROOT/models/SmolLM2-135M-Instruct.Q4_1.gguf"
else
  log "scripts/goldens/tokenizer_goldens.py not present: skipped"
fi
log "done; review and commit tests/golden/"
