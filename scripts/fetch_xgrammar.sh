#!/usr/bin/env bash
# Fetch the pinned XGrammar sources (constrained decoding: JSON schema, regex and EBNF grammars
# compiled to a token-bitmask matcher; docs/design.md §12) from its PyPI sdist into
# third_party/xgrammar/ (git-ignored). CMake builds the C++ core from there as a static library
# without Python (cmake/xgrammar.cmake); the sdist carries dlpack and picojson in 3rdparty/.
#
#   bash scripts/fetch_xgrammar.sh     # idempotent: skips when the pinned version is in place
#
# install_deps.sh runs it, so CI and setup.sh get it with the other dependencies.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VERSION="0.2.9"
SHA256="87b466bca2475e29bb0323abc62c6c33cbcbcff47e5fb800a3e2099ac9620b90"
SDIST_NAME="xgrammar-${VERSION}.tar.gz"
DEST="$ROOT/third_party/xgrammar"
CACHE="$ROOT/.cache/xgrammar"

log() { echo "[fetch_xgrammar] $*"; }

if [[ -f "$DEST/VERSION" && "$(cat "$DEST/VERSION")" == "$VERSION" &&
      -f "$DEST/include/xgrammar/xgrammar.h" ]]; then
  log "xgrammar $VERSION already in $DEST"
  exit 0
fi

mkdir -p "$CACHE"
SDIST="$CACHE/$SDIST_NAME"
if [[ ! -f "$SDIST" ]] || ! echo "$SHA256  $SDIST" | sha256sum -c --status; then
  rm -f "$SDIST"
  log "downloading xgrammar==$VERSION sdist from PyPI"
  # Only the sdist: pip still prepares its metadata, so it installs the build requirements
  # (as wheels) in an isolated environment first.
  python3 -m pip download --quiet --no-deps --no-binary xgrammar "xgrammar==${VERSION}" \
    -d "$CACHE"
fi
[[ -f "$SDIST" ]] || { log "ERROR: sdist not found at $SDIST"; exit 1; }
if ! echo "$SHA256  $SDIST" | sha256sum -c --status; then
  log "ERROR: $SDIST does not have the pinned sha256 $SHA256"
  exit 1
fi

log "extracting $SDIST"
mkdir -p "$ROOT/third_party"
tmp="$(mktemp -d "$ROOT/third_party/.xgrammar.XXXXXX")"
tar -xzf "$SDIST" -C "$tmp"
for f in include/xgrammar/xgrammar.h 3rdparty/dlpack/include/dlpack/dlpack.h \
         3rdparty/picojson/picojson.h cpp/grammar_matcher.cc; do
  [[ -f "$tmp/xgrammar-$VERSION/$f" ]] || { log "ERROR: the sdist lacks $f"; exit 1; }
done
echo "$VERSION" > "$tmp/xgrammar-$VERSION/VERSION"
rm -rf "$DEST"
mv "$tmp/xgrammar-$VERSION" "$DEST"
rmdir "$tmp"
log "xgrammar $VERSION in $DEST"
