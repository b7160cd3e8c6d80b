#include "optim/method_kernels.h"

#include <fmt/format.h>

#include "engine/error.h"
#include "kernels/cpu/cpu_method_kernels.h"
#ifdef TAPEGROK_WITH_CUDA
#include "kernels/cuda/cuda_method_kernels.h"
#endif

namespace tg {

MethodKernels& method_kernels_for(Device device) {
  if (device.is_cpu()) return cpu::method_kernels();
#ifdef TAPEGROK_WITH_CUDA
  return cuda::method_kernels(device.index);
#else
  throw Error(fmt::format("device {} requested: {}", device.str(), cuda_unavailable_reason()));
#endif
}

}  // namespace tg
