// The CPU ops compiled for the generic level (see ops_impl.inc).
#define OPS_NAMESPACE generic_ops
#define OPS_TABLE_NAME kOpsGeneric_impl
#define OPS_LEVEL "generic"
#include "kernels/cpu/ops_impl.inc"

namespace lightserve::kernels::cpu {
const OpsTable kOpsGeneric = generic_ops::kOpsGeneric_impl;
}  // namespace lightserve::kernels::cpu
