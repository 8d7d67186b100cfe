#!/usr/bin/env bash
# Build llama.cpp's CUDA llama-batched-bench (and llama-bench) for the one prepared GPU run
# (scripts/gpu_check.sh step 6, issue 12): the lent machine has no compiler we can count on and no
# network, so the peer is built here, packed by scripts/gpu_bundle.sh and unpacked there.
#
#   nice -n 10 bash scripts/build_llamacpp_cuda.sh     # idempotent; 1-2 h from nothing on 2 cores
#
# Sources: the same pinned llama-cpp-python 0.3.36 vendor/llama.cpp as the CPU reference
# (scripts/build_llamacpp.sh LLAMACPP_FETCH_ONLY=1 fetches and extracts them).
# Output: .cache/llamacpp-cuda/bin/{llama-batched-bench,llama-bench} + VERSION (git-ignored).
#
# What makes it small and quick, and still the fair peer:
#   - sm_90 only (H100 / H200), real code, no PTX: one cubin per kernel;
#   - flash attention kept, vector kernels only for f16 K / f16 V (GGML_CUDA_FA_QUANTS=f16-f16: the
#     KV type both sides use); the mma / tile flash-attention kernels are built as upstream does;
#   - ggml and llama linked statically (BUILD_SHARED_LIBS=OFF): each tool is one file; it loads only
#     libcudart / libcublas (the device image's CUDA toolkit) and libcuda (the driver);
#   - the host part for a baseline x86-64 + AVX2/FMA/F16C/BMI2 (GGML_NATIVE=OFF): this VM's
#     -march=native could emit AVX-512/AMX the device's CPU lacks; the CPU does nothing in the
#     timed decode with every layer offloaded (-ngl 99);
#   - CUDA graphs on (llama.cpp's default for CUDA builds), NCCL off (one GPU), no curl;
#   - LLAMACPP_CUDA_TRIM=1 (the default) leaves out the template instances an f16 LLaMA with
#     head_dim 128 never calls: the quantized-matmul (mmq) instances, the tile flash-attention
#     instances of other head sizes, and the other head sizes in each mma flash-attention
#     instance file (the sources under .cache are edited in place; the CPU reference build does
#     not compile them). llama.cpp's dispatch still names them: after the libraries build, every
#     symbol they reference and none defines is checked to be one of those instances (none of
#     head size 128) and gets a stub that prints its name and aborts, linked into the tools, so
#     the link checks everything else as upstream's does and a call could never compute something
#     else. The kernels the f16 model runs are upstream's, compiled as upstream compiles them.
#     This cuts the 141 CUDA objects' build (1-2 h on 2 shared cores) by roughly half.
# ccache is used for C, C++ and CUDA when installed. Compiler: gcc (nvcc's host compiler).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY_VERSION="0.3.36"
SRC="$ROOT/.cache/llama.cpp/src/llama_cpp_python-${PY_VERSION}/vendor/llama.cpp"
OUT="$ROOT/.cache/llamacpp-cuda"
BUILD="$OUT/build"
read -ra TARGETS <<<"${LLAMACPP_CUDA_TARGETS:-llama-batched-bench llama-bench}"
NVCC="${NVCC:-/usr/local/cuda/bin/nvcc}"
JOBS="${JOBS:-2}"
log() { echo "[build_llamacpp_cuda] $*"; }

have_all() {
  local t
  for t in "${TARGETS[@]}"; do [[ -x "$OUT/bin/$t" ]] || return 1; done
  [[ -f "$OUT/VERSION" ]]
}
if have_all; then
  log "already built: $OUT/bin"
  cat "$OUT/VERSION"
  exit 0
fi
[[ -x "$NVCC" ]] || { log "ERROR: no nvcc at $NVCC (set NVCC)"; exit 1; }
if [[ ! -f "$SRC/CMakeLists.txt" ]]; then
  LLAMACPP_FETCH_ONLY=1 bash "$ROOT/scripts/build_llamacpp.sh"
fi

# The trim (see the header). Idempotent: each edit checks whether it was made.
trim_sources() {
  local cuda="$SRC/ggml/src/ggml-cuda" f
  sed -i -e 's|file(GLOB   SRCS "template-instances/fattn-tile\*.cu")|file(GLOB   SRCS "template-instances/fattn-tile-instance-dkq128-dv128.cu")  # lightserve trim|' \
    -e 's|file(GLOB   SRCS "template-instances/mmq\*.cu")|set(SRCS "")  # lightserve trim: no mmq instances|' \
    "$cuda/CMakeLists.txt"
  grep -q "lightserve trim: no mmq" "$cuda/CMakeLists.txt" ||
    { log "ERROR: the trim did not apply to $cuda/CMakeLists.txt"; exit 1; }
  for f in "$cuda"/template-instances/fattn-mma-f16-instance-*.cu; do
    sed -i '/^DECL_FATTN_MMA_F16_CASE(/{/^DECL_FATTN_MMA_F16_CASE(128, 128,/!d}' "$f"
  done
}
STUBS="$OUT/trim_stubs.o"
linker=(-DCMAKE_EXE_LINKER_FLAGS=)
if [[ "${LLAMACPP_CUDA_TRIM:-1}" == 1 ]]; then
  trim_sources
  # The stubs' object is linked into every executable; until the archives exist (and for the
  # configure's own test links) it is empty.
  mkdir -p "$OUT"
  [[ -f "$STUBS" ]] || echo "" | gcc -x c -c - -o "$STUBS"
  linker=("-DCMAKE_EXE_LINKER_FLAGS=$STUBS")
fi

launcher=()
if command -v ccache >/dev/null; then
  # Paths under the checkout hash relatively, so another worktree's build of the same sources
  # (the objects take ~1 h on 2 cores) is a cache hit.
  export CCACHE_BASEDIR="$ROOT"
  launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache
    -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
fi
mkdir -p "$OUT"
log "configuring (Release, CUDA sm_90, static ggml, baseline x86-64 + AVX2)"
# From $OUT: ggml's configure compiles a probe into the working directory (an a.out).
cd "$OUT"
CC=gcc CXX=g++ cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release "${launcher[@]}" \
  -DCMAKE_CUDA_COMPILER="$NVCC" -DCMAKE_CUDA_ARCHITECTURES=90-real "${linker[@]}" \
  -DBUILD_SHARED_LIBS=OFF -DGGML_CUDA=ON -DGGML_CUDA_FA=ON -DGGML_CUDA_FA_QUANTS=f16-f16 \
  -DGGML_CUDA_NCCL=OFF -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON \
  -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=OFF \
  -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF \
  -DLLAMA_BUILD_EXAMPLES=ON -DLLAMA_BUILD_TOOLS=ON >"$OUT/configure.log" 2>&1 \
  || { tail -40 "$OUT/configure.log"; log "ERROR: configure failed"; exit 1; }
start=$SECONDS
build() {
  cmake --build "$BUILD" -j"$JOBS" --target "$@" >>"$OUT/build.log" 2>&1 \
    || { tail -40 "$OUT/build.log"; log "ERROR: build failed"; exit 1; }
}
: >"$OUT/build.log"
if [[ "${LLAMACPP_CUDA_TRIM:-1}" == 1 ]]; then
  log "building the libraries with -j$JOBS (log: $OUT/build.log)"
  build llama-common "${TARGETS[@]/%/-impl}"
  # The instances the libraries name and none defines: each must be a trimmed one (no head-size-128
  # flash attention among them), and each gets a stub that says so and aborts, so the link checks
  # everything else as upstream's does.
  mapfile -t archives < <(find "$BUILD" -name '*.a' -not -path '*/CMakeFiles/*')
  nm --defined-only "${archives[@]}" 2>/dev/null | awk 'NF >= 3 {print $3}' | sort -u >"$OUT/defined.txt"
  nm --undefined-only "${archives[@]}" 2>/dev/null | awk '$1 == "U" {print $2}' | sort -u \
    >"$OUT/undefined.txt"
  comm -13 "$OUT/defined.txt" "$OUT/undefined.txt" | while read -r sym; do
    printf '%s\t%s\n' "$sym" "$(c++filt "$sym")"
  done | grep -E $'\t.*(ggml|llama|gguf|common_)' >"$OUT/unresolved.txt" || true
  unexpected=$(grep -v -e $'\tvoid mul_mat_q_case<' -e $'\tvoid ggml_cuda_flash_attn_ext_tile_case<' \
    -e $'\tvoid ggml_cuda_flash_attn_ext_mma_f16_case<' "$OUT/unresolved.txt" || true)
  if [[ -n "$unexpected" ]]; then
    log "ERROR: unresolved symbols the trim does not explain:"
    cut -f2 <<<"$unexpected" | head -20
    exit 1
  fi
  if grep -q 'case<128, 128' "$OUT/unresolved.txt"; then
    log "ERROR: a head-size-128 flash-attention instance is missing:"
    grep 'case<128, 128' "$OUT/unresolved.txt" | cut -f2 | head -5
    exit 1
  fi
  # shellcheck disable=SC2028  # the C source's own "\n"
  {
    echo '#include <stdio.h>'
    echo '#include <stdlib.h>'
    echo 'static void trimmed(const char* name) {'
    echo '  fprintf(stderr, "llama.cpp built by lightserve scripts/build_llamacpp_cuda.sh with"'
    echo '          " LLAMACPP_CUDA_TRIM=1 called %s, which the trim left out\n", name);'
    echo '  abort();'
    echo '}'
    n=0
    while IFS=$'\t' read -r sym _; do
      echo "void trimmed_$n(void) __asm__(\"$sym\");"
      echo "void trimmed_$n(void) { trimmed(\"$sym\"); }"
      n=$((n + 1))
    done <"$OUT/unresolved.txt"
  } >"$OUT/trim_stubs.c"
  gcc -O1 -fPIC -c "$OUT/trim_stubs.c" -o "$STUBS"
  rm -f "${TARGETS[@]/#/$BUILD/bin/}"  # relinked with the stubs
  log "trim: $(wc -l <"$OUT/unresolved.txt") template instances left out, each an aborting stub" \
    "(list: $OUT/unresolved.txt)"
fi
log "building ${TARGETS[*]} with -j$JOBS (log: $OUT/build.log)"
build "${TARGETS[@]}"
mkdir -p "$OUT/bin"
for t in "${TARGETS[@]}"; do
  cp "$BUILD/bin/$t" "$OUT/bin/$t"
  strip "$OUT/bin/$t"
done
COMMIT="unknown"
HEADF="$ROOT/.cache/llama.cpp/src/llama_cpp_python-${PY_VERSION}/.git/modules/vendor/llama.cpp/HEAD"
[[ -f "$HEADF" ]] && COMMIT="$(tr -d '[:space:]' <"$HEADF")"
{
  echo "llama-cpp-python ${PY_VERSION}"
  echo "llama.cpp commit ${COMMIT}"
  echo "CUDA build: sm_90, nvcc $("$NVCC" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')," \
    "trim ${LLAMACPP_CUDA_TRIM:-1}," \
    "GGML_CUDA_FA_QUANTS=f16-f16, static ggml, built in $((SECONDS - start)) s"
} >"$OUT/VERSION"
log "done: $(du -sh "$OUT/bin" | cut -f1) in $OUT/bin"
ls -l "$OUT/bin"
cat "$OUT/VERSION"
