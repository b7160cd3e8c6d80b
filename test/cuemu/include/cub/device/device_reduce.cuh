// cuemu's cub::DeviceReduce::TransformReduce: CUB's two-call protocol (a null d_temp_storage asks for
// the size, nothing runs) and a one-thread grid on the stream that reduces in index order. It writes
// its whole temporary storage, so a buffer smaller than the size it asked for is an out-of-bounds
// write under AddressSanitizer, and one that is not device memory is refused at the launch.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

namespace cub {

namespace cuemu_detail {
constexpr std::size_t kReduceTempBytes = 1024;

template <class In, class Out, class N, class Op, class Tr, class T>
__global__ void transform_reduce_kernel(unsigned char* temp, In in, Out out, N n, Op op, Tr tr, T init) {
  for (std::size_t i = 0; i < kReduceTempBytes; ++i) temp[i] = 0xA5;
  T acc = init;
  for (N i = 0; i < n; ++i) acc = op(acc, tr(in[i]));
  *out = acc;
}
}  // namespace cuemu_detail

struct DeviceReduce {
  template <class In, class Out, class N, class Op, class Tr, class T>
  static cudaError_t TransformReduce(void* d_temp_storage, std::size_t& temp_storage_bytes, In d_in, Out d_out,
                                     N num_items, Op reduction_op, Tr transform_op, T init, cudaStream_t stream = 0) {
    if (d_temp_storage == nullptr) {
      temp_storage_bytes = cuemu_detail::kReduceTempBytes;
      return cudaSuccess;
    }
    if (temp_storage_bytes < cuemu_detail::kReduceTempBytes) return cudaErrorInvalidValue;
    ::cuemu::launch(cuemu_detail::transform_reduce_kernel<In, Out, N, Op, Tr, T>, ::cuemu::LaunchConfig(1, 1, 0, stream),
                    ::cuemu::LaunchSite{"cub::DeviceReduce::TransformReduce", __FILE__, __LINE__},
                    static_cast<unsigned char*>(d_temp_storage), d_in, d_out, num_items, reduction_op, transform_op,
                    init);
    return cudaGetLastError();
  }
};

}  // namespace cub
