// Backend::topk_rows on the GPU (topk.cu). Shared by the CUDA backend's translation units; not a
// public header.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/topk.h"

namespace lightserve::kernels::cuda {

// For each i < num_rows: the k best values of row rows[i] (x + rows[i] · width) in rank order
// (kernels/topk.h) into out[i · k, i · k + k), {-1, NaN} past the row's width. One block per row,
// any width below 2³¹, 1 ≤ k ≤ kMaxTopK; rows and out: device memory.
void launch_topk_rows(cudaStream_t stream, const float* x, int64_t width, const int32_t* rows,
                      int64_t num_rows, int32_t k, Ranked* out);

}  // namespace lightserve::kernels::cuda
