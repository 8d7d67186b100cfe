#!/bin/sh
# runtime-packages BINARY: the Debian packages holding the shared libraries BINARY links, one a
# line (for the runtime image's apt-get install). Run where those libraries are installed (the
# build stage, or the machine that built a prebuilt binary). Fails when a library is missing or
# belongs to no package (say, a CUDA library under /usr/local/cuda in a CPU build).
set -eu
bin="$1"
if ldd "$bin" | grep 'not found' >&2; then echo "runtime-packages: $bin: libraries not found" >&2; exit 1; fi
out=""
for lib in $(ldd "$bin" | awk '/=>/ {print $3}'); do
  real="$(readlink -f "$lib")"
  found=""
  for p in "$lib" "$real" "/usr$lib" "/usr$real" "${lib#/usr}" "${real#/usr}"; do
    if pkg="$(dpkg -S "$p" 2>/dev/null)"; then found="${pkg%%:*}"; break; fi
  done
  if [ -z "$found" ]; then echo "runtime-packages: no Debian package holds $lib" >&2; exit 1; fi
  out="$out$found
"
done
printf '%s' "$out" | sort -u
