#include "engine/device.h"

#include <fmt/format.h>

#include "engine/error.h"

#ifdef TAPEGROK_WITH_CUDA
#include "kernels/cuda/cuda_runtime_query.h"
#endif

namespace tg {

std::string Device::str() const { return is_cpu() ? "cpu" : fmt::format("cuda:{}", index); }

std::string cuda_unavailable_reason() {
#ifdef TAPEGROK_WITH_CUDA
  return cuda::device_count_problem();
#else
  return "this build of tapegrok has no CUDA backend (configure with a CUDA toolkit and -DTAPEGROK_CUDA=ON)";
#endif
}

bool cuda_is_available() { return cuda_unavailable_reason().empty(); }

Device parse_device(const std::string& text) {
  if (text == "cpu") return Device::cpu();
  if (text == "auto") return cuda_is_available() ? Device::cuda(0) : Device::cpu();
  if (text == "cuda") return Device::cuda(0);
  if (text.rfind("cuda:", 0) == 0) {
    const std::string digits = text.substr(5);
    const bool ok = !digits.empty() && digits.size() < 4 && digits.find_first_not_of("0123456789") == std::string::npos;
    TG_CHECK(ok, "device '{}': expected cuda:N with N a GPU index", text);
    return Device::cuda(std::stoi(digits));
  }
  throw Error(fmt::format("device '{}': expected one of auto, cpu, cuda, cuda:N", text));
}

}  // namespace tg
