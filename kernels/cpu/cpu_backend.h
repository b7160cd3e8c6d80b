// The CPU backend (f32 and f64): the kernels of kernels/cpu/kernels.h behind the Backend interface.
#pragma once

#include "engine/backend.h"

namespace tg::cpu {
Backend& backend();
}
