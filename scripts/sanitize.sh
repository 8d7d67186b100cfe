#!/usr/bin/env bash
# The whole ctest suite under sanitizers (docs/reliability.md "Sanitizers").
#
#   bash scripts/sanitize.sh asan [ctest args...]   # ASan + UBSan in build-asan/
#   bash scripts/sanitize.sh tsan [ctest args...]   # TSan in build-tsan/
#
# Configures (Release + -g1, the sanitizers of cmake/sanitizers.cmake, no CUDA: the CUDA runtime
# does not start under ASan's shadow layout and these runs are for the host code), builds, and
# runs ctest there. Tests that spawn the daemon or the CLI run build-<mode>/lightserve, which is
# sanitized too: the tests find the binary through LIGHTSERVE_BINARY_DIR, compiled in per build
# tree, and the child inherits the *SAN_OPTIONS below. Any report fails the test that caused it:
# halt_on_error, and LeakSanitizer's exit status for leaks at exit.
#   JOBS=N       build parallelism (default: nproc)
#   CTEST_JOBS=N ctest parallelism (default 1: the tests are CPU-heavy)
# Extra arguments go to ctest, e.g. `-L fast`, `-R 'Tokenizer|Http'` or `-E openai_client`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

mode="${1:-}"
shift || true
case "$mode" in
  asan) sanitizers=address,undefined ;;
  tsan) sanitizers=thread ;;
  *) echo "usage: scripts/sanitize.sh asan|tsan [ctest args...]" >&2; exit 2 ;;
esac
BUILD_DIR="${BUILD_DIR:-build-$mode}"
JOBS="${JOBS:-$(nproc)}"
CTEST_JOBS="${CTEST_JOBS:-1}"
supp="$ROOT/scripts/sanitizers"

echo "== model"
bash scripts/fetch_model.sh
echo "== configure $BUILD_DIR ($sanitizers)"
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DLIGHTSERVE_SANITIZE="$sanitizers" \
  -DLIGHTSERVE_CUDA=OFF
echo "== build ($BUILD_DIR, -j$JOBS)"
cmake --build "$BUILD_DIR" -j"$JOBS"

# print_stacktrace: UBSan's reports carry the call stack. halt_on_error: the first report ends the
# process, so a test cannot pass past one. LeakSanitizer runs at exit (exitcode 23) with the
# suppressions in scripts/sanitizers/ (each one justified there).
export ASAN_OPTIONS="halt_on_error=1:abort_on_error=0:detect_leaks=1:detect_stack_use_after_return=1:check_initialization_order=1:strict_init_order=1:detect_odr_violation=0"
export LSAN_OPTIONS="suppressions=$supp/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:suppressions=$supp/ubsan.supp"
# Tests that wait for the daemon to reach a state allow this many times their usual time.
case "$mode" in
  asan) export LIGHTSERVE_TEST_TIME_SCALE="${LIGHTSERVE_TEST_TIME_SCALE:-2}" ;;
  tsan)
    export LIGHTSERVE_TEST_TIME_SCALE="${LIGHTSERVE_TEST_TIME_SCALE:-6}"
    # 400 soak requests outlast ctest's 900 s under TSan on 2 vCPUs; 100 still mix both
    # protocols, cancellations and concurrency 32.
    export LIGHTSERVE_SOAK_REQUESTS="${LIGHTSERVE_SOAK_REQUESTS:-100}"
    ;;
esac
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:history_size=4:suppressions=$supp/tsan.supp"

echo "== tests ($mode)"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
start=$(date +%s)
rc=0
ctest --test-dir "$BUILD_DIR" --output-on-failure -j"$CTEST_JOBS" "$@" 2>&1 | tee "$log" || rc=$?
echo
echo "== summary ($mode, $(( $(date +%s) - start )) s of tests)"
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
