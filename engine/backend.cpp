#include "engine/backend.h"

#include <fmt/format.h>

#include <cmath>

#include "engine/error.h"
#include "kernels/cpu/cpu_backend.h"
#ifdef TAPEGROK_WITH_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

namespace tg {

const char* unary_op_name(UnaryOp op) {
  switch (op) {
    case UnaryOp::neg: return "neg";
    case UnaryOp::exp: return "exp";
    case UnaryOp::log: return "log";
    case UnaryOp::abs: return "abs";
    case UnaryOp::sqrt: return "sqrt";
    case UnaryOp::square: return "square";
    case UnaryOp::sign: return "sign";
    case UnaryOp::relu: return "relu";
    case UnaryOp::gelu: return "gelu";
    case UnaryOp::gelu_grad2: return "gelu_grad2";
    case UnaryOp::affine: return "affine";
  }
  return "?";
}

const char* binary_op_name(BinaryOp op) {
  switch (op) {
    case BinaryOp::add: return "add";
    case BinaryOp::sub: return "sub";
    case BinaryOp::mul: return "mul";
    case BinaryOp::div: return "div";
  }
  return "?";
}

std::array<double, kAdamDeviceScalars> adam_device_scalars(const AdamStep& s) {
  return {s.lr / s.bias_correction1, std::sqrt(s.bias_correction2), 1.0 - s.lr * s.weight_decay};
}

Backend& backend_for(Device device) {
  if (device.is_cpu()) return cpu::backend();
#ifdef TAPEGROK_WITH_CUDA
  return cuda::backend(device.index);
#else
  throw Error(fmt::format("device {} requested: {}", device.str(), cuda_unavailable_reason()));
#endif
}

}  // namespace tg
