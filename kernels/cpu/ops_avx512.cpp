// The CPU ops compiled for the avx512 level (see ops_impl.inc).
#define OPS_NAMESPACE avx512_ops
#define OPS_TABLE_NAME kOpsAvx512_impl
#define OPS_LEVEL "avx512"
#include "kernels/cpu/ops_impl.inc"

namespace lightserve::kernels::cpu {
const OpsTable kOpsAvx512 = avx512_ops::kOpsAvx512_impl;
}  // namespace lightserve::kernels::cpu
