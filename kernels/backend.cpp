#include "kernels/backend.h"

#include <string>

namespace lightserve::kernels {

std::unique_ptr<Backend> make_backend(const std::string& device, int num_threads,
                                      std::string* error) {
  if (device == "cpu") return make_cpu_backend(num_threads);
  if (device.rfind("cuda", 0) == 0) {
    const std::string rest = device.substr(4);
    int index = 0;
    bool ok = rest.empty();
    if (rest.size() > 1 && rest.size() < 6 && rest[0] == ':' &&
        rest.find_first_not_of("0123456789", 1) == std::string::npos) {
      ok = true;
      index = std::stoi(rest.substr(1));
    }
    if (ok) {
      std::string why;
      auto backend = make_cuda_backend(index, &why);
      if (backend == nullptr && error != nullptr) *error = "device " + device + ": " + why;
      return backend;
    }
  }
  if (error != nullptr) *error = "device \"" + device + "\" is not cpu, cuda or cuda:N";
  return nullptr;
}

}  // namespace lightserve::kernels
