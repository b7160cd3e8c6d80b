#include "kernels/cuda/host_staging.h"

#include <cstring>

namespace tg::cuda {

cudaError_t HostStaging::upload(void* dst, const void* src, std::size_t nbytes, cudaStream_t stream,
                                const char*& call) {
  Slot& slot = slots_[next_];
  if (slot.done == nullptr) {
    call = "cudaEventCreateWithFlags";
    const cudaError_t err = cudaEventCreateWithFlags(&slot.done, cudaEventDisableTiming);
    if (err != cudaSuccess) return err;
  }
  if (slot.in_flight) {
    // Waits only if the device is still kSlots uploads behind.
    call = "cudaEventSynchronize";
    const cudaError_t err = cudaEventSynchronize(slot.done);
    if (err != cudaSuccess) return err;
    slot.in_flight = false;
  }
  if (slot.capacity < nbytes) {
    if (slot.host != nullptr) {
      call = "cudaFreeHost";
      const cudaError_t err = cudaFreeHost(slot.host);
      slot.host = nullptr;
      slot.capacity = 0;
      if (err != cudaSuccess) return err;
    }
    const std::size_t capacity = nbytes < 4096 ? 4096 : nbytes;
    call = "cudaHostAlloc";
    const cudaError_t err = cudaHostAlloc(&slot.host, capacity, cudaHostAllocDefault);
    if (err != cudaSuccess) {
      slot.host = nullptr;
      return err;
    }
    slot.capacity = capacity;
  }
  std::memcpy(slot.host, src, nbytes);
  call = "cudaMemcpyAsync";
  cudaError_t err = cudaMemcpyAsync(dst, slot.host, nbytes, cudaMemcpyHostToDevice, stream);
  if (err != cudaSuccess) return err;
  call = "cudaEventRecord";
  err = cudaEventRecord(slot.done, stream);
  if (err != cudaSuccess) return err;
  slot.in_flight = true;
  next_ = (next_ + 1) % kSlots;
  return cudaSuccess;
}

}  // namespace tg::cuda
