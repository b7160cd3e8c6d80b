// cuemu's cub::BlockScan: the sums CUB documents (ExclusiveSum / InclusiveSum, with the block
// aggregate), computed in thread order. Like CUB it ends without a barrier, so reusing TempStorage
// needs the caller's __syncthreads(); a missing one is a shared-memory race.
#pragma once

#include <cuda_runtime.h>

namespace cub {

enum BlockScanAlgorithm { BLOCK_SCAN_RAKING, BLOCK_SCAN_RAKING_MEMOIZE, BLOCK_SCAN_WARP_SCANS };

template <class T, int BLOCK_DIM_X, BlockScanAlgorithm ALGORITHM = BLOCK_SCAN_RAKING, int BLOCK_DIM_Y = 1,
          int BLOCK_DIM_Z = 1>
class BlockScan {
  static constexpr int kThreads = BLOCK_DIM_X * BLOCK_DIM_Y * BLOCK_DIM_Z;

 public:
  struct TempStorage {
    T item[kThreads];
  };

  explicit BlockScan(TempStorage& storage) : storage_(storage) {
    const unsigned threads = blockDim.x * blockDim.y * blockDim.z;
    if (threads != static_cast<unsigned>(kThreads)) {
      ::cuemu::device_trap("cub::BlockScan used by a block whose size differs from its BLOCK_DIM",
                           std::source_location::current());
    }
  }

  void ExclusiveSum(T input, T& output, T& aggregate) {
    const int me = static_cast<int>(threadIdx.x + BLOCK_DIM_X * (threadIdx.y + BLOCK_DIM_Y * threadIdx.z));
    storage_.item[me] = input;
    __syncthreads();
    T before{}, all{};
    for (int i = 0; i < kThreads; ++i) {
      if (i == me) before = all;
      all = all + storage_.item[i];
    }
    output = before;
    aggregate = all;
  }
  void ExclusiveSum(T input, T& output) {
    T aggregate;
    ExclusiveSum(input, output, aggregate);
  }
  void InclusiveSum(T input, T& output, T& aggregate) {
    ExclusiveSum(input, output, aggregate);
    output = output + input;
  }
  void InclusiveSum(T input, T& output) {
    T aggregate;
    InclusiveSum(input, output, aggregate);
  }

 private:
  TempStorage& storage_;
};

}  // namespace cub
