// The CPU backend (f32 and f64): the engine's kernels of kernels/cpu/kernels.h behind the Backend interface
// (the methods' kernels: cpu_method_kernels.h).
#pragma once

#include "engine/backend.h"

namespace tg::cpu {
Backend& backend();
}
