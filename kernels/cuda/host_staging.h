// Pinned host buffers that asynchronous host-to-device copies go through (Backend::copy_from_host_async).
//
// A copy from pageable memory may make the host wait for the stream; one from pinned memory does not,
// but the pinned bytes must stay untouched until the device has read them. So the stager keeps a ring
// of pinned slots, each with an event recorded after the copy that used it: a slot is refilled only
// once its event has completed. With kSlots slots the host waits only when it runs more than kSlots
// uploads ahead of the device (a sync-free step makes three: ids, targets, optimizer scalars), which
// also bounds how far ahead of the GPU the host can queue steps.
// Like launch.cuh, nothing here throws: errors come back with the name of the failing call.
#pragma once

#include <cuda_runtime_api.h>

#include <array>
#include <cstddef>

namespace tg::cuda {

class HostStaging {
 public:
  static constexpr std::size_t kSlots = 16;

  HostStaging() = default;
  HostStaging(const HostStaging&) = delete;
  HostStaging& operator=(const HostStaging&) = delete;
  // Never destroyed in practice (backends live for the whole process); the pinned memory goes with it.

  // Copies src[0, nbytes) into the next slot and enqueues its copy to dst on `stream`.
  cudaError_t upload(void* dst, const void* src, std::size_t nbytes, cudaStream_t stream, const char*& call);

 private:
  struct Slot {
    void* host = nullptr;  // pinned, `capacity` bytes
    std::size_t capacity = 0;
    cudaEvent_t done = nullptr;  // recorded after the copy that last read `host`
    bool in_flight = false;
  };
  std::array<Slot, kSlots> slots_{};
  std::size_t next_ = 0;
};

}  // namespace tg::cuda
