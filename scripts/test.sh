#!/usr/bin/env bash
# Second command of the README and the CI entry point (.ci/run calls it).
# Does whatever setup is missing (deps, build, model), then runs the whole ctest suite.
# Exits non-zero on any failure.
#   CTEST_JOBS=2 bash scripts/test.sh      # tests are CPU-heavy; default -j1
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

CTEST_JOBS="${CTEST_JOBS:-1}"

echo "== dependencies"
bash scripts/install_deps.sh
echo "== model"
bash scripts/fetch_model.sh
echo "== vocabularies"   # other families' tokenizer goldens (tests/model/tokenizer_families_test.cpp)
bash scripts/fetch_vocabs.sh
echo "== format"
bash scripts/check_format.sh
echo "== build"
bash scripts/build.sh   # incremental: cheap when nothing changed
echo "== python test client"   # the openai client test (tests/frontends/http/openai_client_test.py)
# jsonschema: the client test validates constrained (JSON schema) outputs with it.
if [[ ! -x .venv-test/bin/python ]] ||
   ! .venv-test/bin/python -c "import openai, jsonschema" 2>/dev/null; then
  # A hard failure: a silently skipped client test would hide a broken install step.
  [[ -x .venv-test/bin/python ]] || python3 -m venv .venv-test
  .venv-test/bin/pip install -q openai==1.109.1 jsonschema==4.26.0
fi
echo "== python gRPC reflection client"   # tests/frontends/grpc/grpc_reflection_client_test.py
if [[ ! -x .venv-grpc/bin/python ]] || ! .venv-grpc/bin/python -c "import grpc_reflection" 2>/dev/null; then
  python3 -m venv .venv-grpc
  .venv-grpc/bin/pip install -q grpcio==1.85.4 grpcio-reflection==1.85.1
fi

echo "== tests"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
rc=0
ctest --test-dir build --output-on-failure -j"$CTEST_JOBS" 2>&1 | tee "$log" || rc=$?
echo
echo "== summary"
grep -E "tests passed|No tests were found" "$log" || echo "(no ctest summary line)"
if [[ $rc -ne 0 ]]; then
  echo "FAILED (ctest exit $rc)" >&2
  exit "$rc"
fi
if grep -q "No tests were found" "$log"; then
  echo "FAILED: no tests found" >&2
  exit 1
fi
echo "OK"
