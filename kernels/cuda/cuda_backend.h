// The CUDA backend (f32, with i32 where the interface needs it): the engine's kernels of kernels/cuda/*.cu
// behind the Backend interface, one instance per GPU (the methods' kernels: cuda_method_kernels.h).
#pragma once

#include "engine/backend.h"

namespace tg::cuda {

// The backend of GPU `index`, created on first use and never destroyed (tensors in static storage
// may outlive main()). Throws tg::Error when no GPU is available or the index is out of range.
Backend& backend(int index);

}  // namespace tg::cuda
