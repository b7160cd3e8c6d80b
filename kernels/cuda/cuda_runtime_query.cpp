#include "kernels/cuda/cuda_runtime_query.h"

#include <cuda_runtime_api.h>

namespace tg::cuda {

namespace {

struct Query {
  int count = 0;
  std::string problem;
};

Query ask_runtime() noexcept {
  Query q;
  try {
    int count = 0;  // cudaGetDeviceCount leaves it untouched on failure
    const cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) {
      cudaGetLastError();  // do not leave the failure behind for the next CUDA call to report
      q.problem = std::string("cudaGetDeviceCount failed with ") + cudaGetErrorName(err) + " (" +
                  std::to_string(static_cast<int>(err)) + "): " + cudaGetErrorString(err);
    } else if (count < 1) {
      q.problem = "cudaGetDeviceCount reports no CUDA device";
    } else {
      q.count = count;
    }
  } catch (...) {  // std::bad_alloc while building the message
    q.count = 0;
    q.problem = "cudaGetDeviceCount could not be queried";
  }
  return q;
}

const Query& query() noexcept {
  static const Query q = ask_runtime();
  return q;
}

}  // namespace

std::string device_count_problem() {
  try {
    return query().problem;
  } catch (...) {
    return "no CUDA GPU";
  }
}

int device_count() { return query().count; }

}  // namespace tg::cuda
