// Whether the CUDA runtime sees a GPU, asked once and cached. Never throws: any failure of
// cudaGetDeviceCount (no driver, the stub libcuda, ...) means "no GPU".
#pragma once

#include <string>

namespace tg::cuda {

// "" when cudaGetDeviceCount reports at least one GPU, otherwise why not (with the CUDA error
// name, number and message).
std::string device_count_problem();

// The number of GPUs the runtime reports (0 when device_count_problem() is not empty).
int device_count();

}  // namespace tg::cuda
