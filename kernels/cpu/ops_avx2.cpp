// The CPU ops compiled for the avx2 level (see ops_impl.inc).
#define OPS_NAMESPACE avx2_ops
#define OPS_TABLE_NAME kOpsAvx2_impl
#define OPS_LEVEL "avx2"
#include "kernels/cpu/ops_impl.inc"

namespace lightserve::kernels::cpu {
const OpsTable kOpsAvx2 = avx2_ops::kOpsAvx2_impl;
}  // namespace lightserve::kernels::cpu
