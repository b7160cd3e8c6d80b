// cuemu's cub::DeviceRadixSort::SortPairs: CUB's two-call protocol and its documented result, a
// stable ascending sort of the pairs by key bits [begin_bit, end_bit), run as a one-thread grid on
// the stream. The permutation is built in the caller's temporary storage, so a buffer smaller than
// the size it asked for is an out-of-bounds write under AddressSanitizer.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <type_traits>

namespace cub {

namespace cuemu_detail {
inline std::size_t sort_temp_bytes(std::size_t n) { return 256 + n * sizeof(long long); }

template <class K, class V>
__global__ void sort_pairs_kernel(long long* order, const K* keys_in, K* keys_out, const V* values_in, V* values_out,
                                  long long n, int begin_bit, int end_bit) {
  using U = std::make_unsigned_t<K>;
  const int bits = end_bit - begin_bit;
  const U mask = bits >= static_cast<int>(sizeof(U) * 8) ? U(~U(0)) : U((U(1) << bits) - 1);
  auto digit = [&](long long i) { return (static_cast<U>(keys_in[i]) >> begin_bit) & mask; };
  for (long long i = 0; i < n; ++i) order[i] = i;
  std::stable_sort(order, order + n, [&](long long a, long long b) { return digit(a) < digit(b); });
  for (long long i = 0; i < n; ++i) {
    keys_out[i] = keys_in[order[i]];
    values_out[i] = values_in[order[i]];
  }
}
}  // namespace cuemu_detail

struct DeviceRadixSort {
  template <class K, class V, class N>
  static cudaError_t SortPairs(void* d_temp_storage, std::size_t& temp_storage_bytes, const K* d_keys_in,
                               K* d_keys_out, const V* d_values_in, V* d_values_out, N num_items, int begin_bit = 0,
                               int end_bit = sizeof(K) * 8, cudaStream_t stream = 0) {
    const std::size_t needed = cuemu_detail::sort_temp_bytes(static_cast<std::size_t>(num_items));
    if (d_temp_storage == nullptr) {
      temp_storage_bytes = needed;
      return cudaSuccess;
    }
    if (temp_storage_bytes < needed || begin_bit < 0 || end_bit > static_cast<int>(sizeof(K) * 8) ||
        begin_bit >= end_bit) {
      return cudaErrorInvalidValue;
    }
    if (num_items == 0) return cudaSuccess;
    ::cuemu::launch(cuemu_detail::sort_pairs_kernel<K, V>, ::cuemu::LaunchConfig(1, 1, 0, stream),
                    ::cuemu::LaunchSite{"cub::DeviceRadixSort::SortPairs", __FILE__, __LINE__},
                    static_cast<long long*>(d_temp_storage), d_keys_in, d_keys_out, d_values_in, d_values_out,
                    static_cast<long long>(num_items), begin_bit, end_bit);
    return cudaGetLastError();
  }
};

}  // namespace cub
