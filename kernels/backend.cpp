#include "kernels/backend.h"

#include <algorithm>
#include <string>
#include <vector>

#include "base/check.h"

namespace lightserve::kernels {

void Backend::argmax_rows(const float* x, int64_t n, int64_t width, int32_t* ids) {
  if (n <= 0 || width <= 0) return;
  std::vector<float> host;
  const float* rows = x;
  if (!host_memory()) {
    host.resize(static_cast<size_t>(n * width));
    download(host.data(), x, n * width * static_cast<int64_t>(sizeof(float)));
    rows = host.data();
  }
  for (int64_t r = 0; r < n; ++r) {
    const float* row = rows + r * width;
    ids[r] = static_cast<int32_t>(std::max_element(row, row + width) - row);
  }
}

void Backend::topk_rows(const float* x, int64_t width, std::span<const int32_t> rows, int32_t k,
                        Ranked* out) {
  LS_CHECK(k >= 1 && k <= kMaxTopK) << "topk_rows: k = " << k << " outside [1, " << kMaxTopK << "]";
  std::vector<float> host;
  if (!host_memory()) host.resize(static_cast<size_t>(std::max<int64_t>(width, 0)));
  for (size_t i = 0; i < rows.size(); ++i) {
    const float* row = x + static_cast<int64_t>(rows[i]) * width;
    if (!host_memory() && width > 0) {
      download(host.data(), row, width * static_cast<int64_t>(sizeof(float)));
      row = host.data();
    }
    topk_row(row, width, k, out + static_cast<int64_t>(i) * k);
  }
}

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
