#!/usr/bin/env bash
# First command of the README: install dependencies, build, fetch the default model, check it
# loads. Safe to re-run (every step skips what is already done, except the incremental build).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

echo "== 1/4 dependencies"
bash scripts/install_deps.sh
echo "== 2/4 build"
bash scripts/build.sh
echo "== 3/4 model"
bash scripts/fetch_model.sh
echo "== 4/4 check"
LIGHTSERVE=build/server/lightserve
[[ -x "$LIGHTSERVE" ]] || { echo "ERROR: $LIGHTSERVE was not built" >&2; exit 1; }
"$LIGHTSERVE" info

# TODO(server): once `lightserve serve` exists, start the daemon here (loopback, default config),
# wait for GET /ready, and print the curl / gRPC commands to talk to it.

cat <<EOF

Setup done. Next:
  $LIGHTSERVE generate --prompt "The capital of France is"
  bash scripts/test.sh            # unit + golden tests
EOF
