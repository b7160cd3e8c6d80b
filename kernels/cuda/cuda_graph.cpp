#include "kernels/cuda/cuda_graph.h"

namespace tg::cuda {

cudaError_t GraphSet::begin(cudaStream_t stream, const char*& call) {
  call = "cudaStreamBeginCapture";
  return cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal);
}

cudaError_t GraphSet::end(cudaStream_t stream, std::uint64_t& id, const char*& call) {
  cudaGraph_t graph = nullptr;
  call = "cudaStreamEndCapture";
  cudaError_t err = cudaStreamEndCapture(stream, &graph);
  if (err != cudaSuccess) {
    if (graph != nullptr) cudaGraphDestroy(graph);
    return err;
  }
  cudaGraphExec_t exec = nullptr;
  call = "cudaGraphInstantiate";
  err = cudaGraphInstantiate(&exec, graph, 0);
  // The executable graph is a copy: the recorded one is not needed either way.
  const cudaError_t freed = cudaGraphDestroy(graph);
  if (err != cudaSuccess) return err;
  if (freed != cudaSuccess) {
    call = "cudaGraphDestroy";
    cudaGraphExecDestroy(exec);
    return freed;
  }
  id = next_id_++;
  graphs_[id] = exec;
  return cudaSuccess;
}

void GraphSet::abort(cudaStream_t stream) noexcept {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(stream, &status) == cudaSuccess && status != cudaStreamCaptureStatusNone) {
    cudaGraph_t graph = nullptr;
    cudaStreamEndCapture(stream, &graph);  // fails for an invalidated capture; the stream leaves capture mode
    if (graph != nullptr) cudaGraphDestroy(graph);
  }
  cudaGetLastError();  // nothing to report: the error that made the capture fail is already on its way
}

cudaError_t GraphSet::launch(std::uint64_t id, cudaStream_t stream, const char*& call) const {
  call = "cudaGraphLaunch";
  auto it = graphs_.find(id);
  if (it == graphs_.end()) return cudaErrorInvalidValue;
  return cudaGraphLaunch(it->second, stream);
}

cudaError_t GraphSet::destroy(std::uint64_t id, const char*& call) {
  call = "cudaGraphExecDestroy";
  auto it = graphs_.find(id);
  if (it == graphs_.end()) return cudaErrorInvalidValue;
  const cudaError_t err = cudaGraphExecDestroy(it->second);
  graphs_.erase(it);
  return err;
}

}  // namespace tg::cuda
