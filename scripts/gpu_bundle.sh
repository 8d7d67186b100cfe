#!/usr/bin/env bash
# Packs what scripts/gpu_check.sh runs on a lent GPU machine. That machine's image has the CUDA
# toolkit (nvcc, cuBLAS) and a newer glibc/libstdc++, but none of this project's Debian libraries
# (gRPC, protobuf, yaml-cpp, PCRE2, ...) and no network, so the project cannot be built there:
# this builds the Release + CUDA binaries here and packs them, stripped, with the shared libraries
# they load that the image lacks (everything ldd resolves except glibc, libstdc++/libgcc and
# CUDA's own), into one xz file well under the 64 MiB a device call carries.
#   bash scripts/gpu_bundle.sh [BUILD_DIR]          (default build; configured where nvcc was found)
# Writes .cache/gpu-bundle/lightserve-gpu.tar.xz (git-ignored); the device call names
# .cache/gpu-bundle in `carry` and runs `bash scripts/gpu_check.sh`, which unpacks it.
# With llama.cpp's CUDA llama-batched-bench built (scripts/build_llamacpp_cuda.sh; LLAMACPP_CUDA_BIN,
# default .cache/llamacpp-cuda/bin) it goes in too, as lightserve-gpu/llamacpp/ (gpu_check.sh
# step 6 runs it); LLAMACPP_CUDA_BIN=none leaves it out.
# Cost here: the build (incremental: minutes; from nothing ~20 min on 2 cores), packing ~1 min.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUILD="${1:-build}"
OUT_DIR="$ROOT/.cache/gpu-bundle"
if ! grep -q '^CMAKE_CUDA_COMPILER:.*nvcc' "$BUILD/CMakeCache.txt" 2>/dev/null; then
  echo "error: $BUILD is not configured with nvcc (CMAKE_CUDA_COMPILER): configure a build where" \
    "the CUDA toolkit is installed (scripts/build.sh finds /usr/local/cuda/bin/nvcc)" >&2
  exit 1
fi
build_type=$(sed -n 's/^CMAKE_BUILD_TYPE:STRING=//p' "$BUILD/CMakeCache.txt")
if [ "$build_type" != Release ]; then
  echo "warning: $BUILD is a '$build_type' build; timings on the GPU want Release" >&2
fi
targets=(lightserve lightserve-loadtest kernels_tests model_tests runtime_bench attention_bench
  copy_bandwidth)
cmake --build "$BUILD" -j"${JOBS:-2}" --target "${targets[@]}"

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/lightserve-gpu/bin" "$stage/lightserve-gpu/lib"
binaries=("$BUILD/lightserve" "$BUILD/lightserve-loadtest" "$BUILD/tests/kernels_tests" "$BUILD/tests/model_tests"
  "$BUILD/bench/runtime_bench" "$BUILD/bench/attention_bench" "$BUILD/bench/copy_bandwidth")
for b in "${binaries[@]}"; do
  cp "$b" "$stage/lightserve-gpu/bin/"
  strip "$stage/lightserve-gpu/bin/$(basename "$b")"
done
# llama.cpp's CUDA peer (one static file: its ggml is linked in; the libraries it loads are
# packed below with ours).
llamacpp_bin="${LLAMACPP_CUDA_BIN:-$ROOT/.cache/llamacpp-cuda/bin}"
if [ -x "$llamacpp_bin/llama-batched-bench" ]; then
  mkdir -p "$stage/lightserve-gpu/llamacpp"
  cp "$llamacpp_bin/llama-batched-bench" "$stage/lightserve-gpu/llamacpp/"
  strip "$stage/lightserve-gpu/llamacpp/llama-batched-bench"
  cat "$llamacpp_bin/../VERSION" >"$stage/lightserve-gpu/llamacpp/VERSION" 2>/dev/null ||
    echo "llama.cpp (no VERSION)" >"$stage/lightserve-gpu/llamacpp/VERSION"
  binaries+=("$llamacpp_bin/llama-batched-bench")
  echo "llama.cpp: $llamacpp_bin/llama-batched-bench" \
    "($(($(stat -c %s "$stage/lightserve-gpu/llamacpp/llama-batched-bench") >> 20)) MiB stripped)"
elif [ "${LLAMACPP_CUDA_BIN:-}" != none ]; then
  echo "note: no llama.cpp CUDA build at $llamacpp_bin (scripts/build_llamacpp_cuda.sh):" \
    "gpu_check.sh step 6 will be skipped"
fi
# Libraries the image has itself (glibc, the C++ runtime) or that come with its CUDA toolkit.
skip='^(linux-vdso|ld-linux|libc|libm|libpthread|libdl|librt|libresolv|libgcc_s|libstdc\+\+|libcuda|libcudart|libcublas|libcublasLt)\.'
for b in "${binaries[@]}"; do
  ldd "$b" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}'
done | sort -u | while read -r name path; do
  if [[ ! "$name" =~ $skip ]]; then cp -L "$path" "$stage/lightserve-gpu/lib/$name"; fi
done
git rev-parse HEAD >"$stage/lightserve-gpu/COMMIT"
git status --porcelain --untracked-files=no | head -20 >>"$stage/lightserve-gpu/COMMIT"
mkdir -p "$OUT_DIR"
tar -C "$stage" -cJf "$OUT_DIR/lightserve-gpu.tar.xz" lightserve-gpu
size=$(stat -c %s "$OUT_DIR/lightserve-gpu.tar.xz")
echo "$OUT_DIR/lightserve-gpu.tar.xz: $((size >> 20)) MiB ($(ls "$stage/lightserve-gpu/lib" | wc -l) libraries)"
if [ "$size" -gt $((56 << 20)) ]; then
  echo "error: the bundle is over 56 MiB; a device call carries 64 MiB with the working tree" >&2
  exit 1
fi
