// The CUDA method kernels (f32): the amplifier and Grokfast kernels of kernels/cuda/*.cu behind the
// MethodKernels interface, one instance per GPU, launched on that GPU backend's stream.
#pragma once

#include "optim/method_kernels.h"

namespace tg::cuda {

// The method kernels of GPU `index`, created on first use and never destroyed. Throws tg::Error when
// no GPU is available or the index is out of range (the errors of backend(index)).
MethodKernels& method_kernels(int index);

}  // namespace tg::cuda
