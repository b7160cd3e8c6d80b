// How the CPU's interface classes (cpu_backend.cpp, cpu_method_kernels.cpp) reach the typed kernels of
// kernels.h: a tensor's data as a raw pointer, and a call for the C++ type of its floating dtype.
#pragma once

#include <fmt/format.h>

#include "engine/dtype.h"
#include "engine/error.h"
#include "engine/tensor.h"
#include "kernels/cpu/float_mode.h"

namespace tg::cpu {

template <class T> T* ptr(const Tensor& t) { return static_cast<T*>(t.raw_data()); }

// Calls f(T{}) with T the C++ type of a floating dtype, under the kernels' floating-point mode
// (float_mode.h).
template <class F>
void dispatch_floating(DType dtype, const char* kernel, F&& f) {
  const FloatModeScope mode;
  switch (dtype) {
    case DType::f32: f(float{}); return;
    case DType::f64: f(double{}); return;
    case DType::i32: break;
  }
  throw Error(fmt::format("cpu kernel {}: unsupported dtype {}", kernel, dtype_name(dtype)));
}

}  // namespace tg::cpu
