// The CUDA graphs of one backend: stream capture, instantiation, replay and destruction on raw handles.
// Like the launchers (launch.cuh) nothing here throws: every function returns the first CUDA error
// and sets `call` to the CUDA function that failed, and CudaBackend turns that into a tg::Error.
// The capture pools that keep a graph's memory its own live in the caching allocator
// (engine/allocator.h); CudaBackend ties each graph to its pool.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <map>

namespace tg::cuda {

class GraphSet {
 public:
  GraphSet() = default;
  GraphSet(const GraphSet&) = delete;
  GraphSet& operator=(const GraphSet&) = delete;

  // Starts recording `stream` (cudaStreamCaptureModeThreadLocal: only this thread's unsafe calls, such
  // as a cudaMalloc or a synchronisation, invalidate the capture).
  cudaError_t begin(cudaStream_t stream, const char*& call);
  // Ends the recording and instantiates it; `id` (> 0) names the executable graph from then on.
  cudaError_t end(cudaStream_t stream, std::uint64_t& id, const char*& call);
  // Ends a capture that failed and drops what it recorded; errors are cleared, not reported.
  void abort(cudaStream_t stream) noexcept;
  cudaError_t launch(std::uint64_t id, cudaStream_t stream, const char*& call) const;
  // Frees the executable graph; the caller makes sure no launch of it is still running.
  cudaError_t destroy(std::uint64_t id, const char*& call);
  bool contains(std::uint64_t id) const { return graphs_.count(id) > 0; }

 private:
  std::map<std::uint64_t, cudaGraphExec_t> graphs_;
  std::uint64_t next_id_ = 1;
};

}  // namespace tg::cuda
