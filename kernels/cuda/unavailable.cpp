// make_cuda_backend in a build without nvcc (CMake found no CUDA compiler).
#include "kernels/backend.h"

namespace lightserve::kernels {

std::unique_ptr<Backend> make_cuda_backend(int, std::string* error) {
  if (error != nullptr) {
    *error = "this build has no CUDA backend (nvcc was not found when it was configured)";
  }
  return nullptr;
}

bool cuda_compiled() {
  return false;
}

}  // namespace lightserve::kernels
