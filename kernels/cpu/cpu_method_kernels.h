// The CPU's method kernels (f32 and f64): the amplifier and Grokfast kernels of kernels/cpu/kernels.h
// behind the MethodKernels interface.
#pragma once

#include "optim/method_kernels.h"

namespace tg::cpu {
MethodKernels& method_kernels();
}
