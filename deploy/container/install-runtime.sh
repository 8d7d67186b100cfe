#!/bin/sh
# install-runtime DIR: in the image's runtime stage, install DIR/lightserve and the Debian
# packages DIR/runtime-packages.txt names (its shared libraries), then check that every library
# resolves and the binary runs. DIR is removed.
set -eu
dir="$1"
apt-get update -qq
# shellcheck disable=SC2046
apt-get install -y -qq --no-install-recommends $(cat "$dir/runtime-packages.txt")
rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb
install -m 0755 "$dir/lightserve" /usr/local/bin/lightserve
rm -rf "$dir"
if ldd /usr/local/bin/lightserve | grep 'not found'; then
  echo "install-runtime: libraries not found" >&2; exit 1
fi
/usr/local/bin/lightserve --version
