#!/usr/bin/env bash
# First command of the README: install dependencies, build, fetch the default model, then serve it
# (`lightserve serve` in the foreground on 127.0.0.1: HTTP 8080, gRPC 50051; Ctrl-C drains and
# stops). Safe to re-run (every step skips what is already done, except the incremental build).
#   bash scripts/setup.sh                  # ... and serve with the defaults
#   bash scripts/setup.sh --no-serve       # stop after the checks
#   bash scripts/setup.sh -- --kv-budget 2GiB --http-port 9000   # flags for `lightserve serve`
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SERVE=1
if [[ "${1:-}" == "--no-serve" ]]; then
  SERVE=0
  shift
fi
if [[ "${1:-}" == "--" ]]; then
  shift
fi

echo "== 1/4 dependencies"
bash scripts/install_deps.sh
echo "== 2/4 build"
bash scripts/build.sh
echo "== 3/4 model"
bash scripts/fetch_model.sh
echo "== 4/4 check"
LIGHTSERVE=build/lightserve
[[ -x "$LIGHTSERVE" ]] || { echo "ERROR: $LIGHTSERVE was not built" >&2; exit 1; }
"$LIGHTSERVE" info

if [[ $SERVE -eq 0 ]]; then
  cat <<EOF

Setup done. Next:
  $LIGHTSERVE serve               # the daemon (HTTP :8080, gRPC :50051)
  $LIGHTSERVE generate --prompt "The capital of France is"
  bash scripts/test.sh            # the whole test suite
EOF
  exit 0
fi

cat <<'EOF'

Setup done. Serving the default model now (Ctrl-C or SIGTERM drains and stops). Try, from
another terminal:
  curl -s localhost:8080/v1/completions -H 'Content-Type: application/json' \
       -d '{"prompt": "The capital of France is", "max_tokens": 16, "temperature": 0}'
  curl -s localhost:8080/metrics | grep '^lightserve_'
EOF
exec "$LIGHTSERVE" serve "$@"
