#!/usr/bin/env bash
# ctest deploy.manifests: tests/deploy/validate_manifests.py in the git-ignored venv .venv-deploy
# (kubernetes-validate from PyPI, created here when missing; a failed install fails the test:
# a silent skip would hide it). promtool (Debian's `prometheus` package) is used when present.
#   bash tests/deploy/validate_manifests.sh build/lightserve
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="$ROOT/.venv-deploy"
if ! "$VENV/bin/python" -c "import kubernetes_validate, yaml, jsonschema" 2>/dev/null; then
  echo "[validate_manifests] creating $VENV (kubernetes-validate)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check kubernetes-validate==1.37.0 PyYAML
fi
exec "$VENV/bin/python" "$ROOT/tests/deploy/validate_manifests.py" "${1:-$ROOT/build/lightserve}"
