// The CPU ops compiled for the avx512 level with AVX-512 BF16 (vcvtneps2bf16 for the bf16 KV
// cache's stores and roundings; see ops_impl.inc). Picked only where the CPU has AVX512_BF16.
#define OPS_NAMESPACE avx512bf16_ops
#define OPS_TABLE_NAME kOpsAvx512Bf16_impl
#define OPS_LEVEL "avx512-bf16"
#define OPS_AVX512_BF16 1
#include "kernels/cpu/ops_impl.inc"

namespace lightserve::kernels::cpu {
const OpsTable kOpsAvx512Bf16 = avx512bf16_ops::kOpsAvx512Bf16_impl;
}  // namespace lightserve::kernels::cpu
