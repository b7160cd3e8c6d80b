// cuemu's stand-in for libcudart: the subset of the runtime API tapegrok calls, with the semantics
// the CUDA Runtime API documents, executed on the calling thread.
//
// Memory: every cudaMalloc is its own heap block of exactly the requested size, 256-byte aligned and
// filled with 0xFF bytes (NaN as float) because device memory is not zeroed; under AddressSanitizer an
// access past its end or after cudaFree is reported. Streams run their work at once, in submission
// order; a stream being captured records it instead, and a graph launch replays the record. The
// calls a capture forbids fail as they do on a GPU and invalidate the capture.
#include <cuda_runtime.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "test/cuemu/src/device_model.h"
#include "test/cuemu/src/runtime_state.h"

struct CUstream_st {
  bool capturing = false;
  bool invalidated = false;
  std::vector<std::function<void()>> recorded;
};
struct CUgraph_st {
  std::vector<std::function<void()>> ops;
};
struct CUgraphExec_st {
  std::vector<std::function<void()>> ops;
};
struct CUevent_st {
  int unused = 0;
};

namespace cuemu {

namespace {

thread_local cudaError_t last_error = cudaSuccess;
thread_local cudaStreamCaptureMode thread_capture_mode = cudaStreamCaptureModeGlobal;
int capturing_streams = 0;

struct Allocation {
  std::size_t bytes;
  bool pinned_host;
};
std::mutex memory_mu;
std::map<std::uintptr_t, Allocation>& allocations() {
  static std::map<std::uintptr_t, Allocation> m;
  return m;
}
std::size_t device_bytes_in_use = 0;

std::size_t memory_limit() {
  static const std::size_t limit = [] {
    const char* s = std::getenv("CUEMU_MEMORY_MIB");
    return s ? static_cast<std::size_t>(std::strtoull(s, nullptr, 10)) << 20 : device::kMemoryBytes;
  }();
  return limit;
}

// A call that a capture in the thread's mode forbids (cudaMalloc, synchronous copies ...).
bool capture_forbids_unsafe_calls() {
  return capturing_streams > 0 && thread_capture_mode != cudaStreamCaptureModeRelaxed;
}

cudaError_t remember(cudaError_t err) {
  if (err != cudaSuccess) last_error = err;
  return err;
}

}  // namespace

void fail(const std::string& what) {
  std::fprintf(stderr, "cuemu: %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}
void report(const std::string& what) {
  std::fprintf(stderr, "cuemu: %s\n", what.c_str());
  std::fflush(stderr);
}
std::string fmt_hex(unsigned value) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%08x", value);
  return buf;
}
std::string fmt_pointer(const void* p) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%p", p);
  return buf;
}
void set_last_error(cudaError_t err) { last_error = err; }

void submit(cudaStream_t stream, std::function<void()> op) {
  if (stream && stream->capturing) {
    stream->recorded.push_back(std::move(op));
    return;
  }
  op();
}

bool is_device_range(const void* p, std::size_t bytes) {
  std::lock_guard<std::mutex> g(memory_mu);
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  auto it = allocations().upper_bound(a);
  if (it == allocations().begin()) return false;
  --it;
  const std::size_t size = std::max<std::size_t>(it->second.bytes, 1);
  return a >= it->first && a - it->first <= size && bytes <= size - (a - it->first);
}

bool is_device_pointer(const void* p) { return is_device_range(p, 0) || is_device_range(p, 1); }

}  // namespace cuemu

using namespace cuemu;

extern "C" {

// ---------------------------------------------------------------- errors and devices
cudaError_t cudaGetLastError(void) {
  const cudaError_t e = last_error;
  last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError(void) { return last_error; }

const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorIllegalState: return "cudaErrorIllegalState";
    case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated: return "cudaErrorStreamCaptureInvalidated";
    case cudaErrorStreamCaptureWrongThread: return "cudaErrorStreamCaptureWrongThread";
    default: return "cudaErrorUnknown";
  }
}
const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
    default: return "unknown error (emulated device)";
  }
}

cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) { return remember(device == 0 ? cudaSuccess : cudaErrorInvalidDevice); }
cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* value, enum cudaDeviceAttr attr, int device) {
  if (device != 0) return remember(cudaErrorInvalidDevice);
  switch (attr) {
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = static_cast<int>(device::kMaxOptinSmem); return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = static_cast<int>(device::kMaxStaticSmem); return cudaSuccess;
    case cudaDevAttrComputeCapabilityMajor: *value = device::kComputeMajor; return cudaSuccess;
    case cudaDevAttrComputeCapabilityMinor: *value = device::kComputeMinor; return cudaSuccess;
    case cudaDevAttrMultiProcessorCount: *value = device::kMultiprocessors; return cudaSuccess;
    case cudaDevAttrMaxThreadsPerBlock: *value = device::kMaxThreadsPerBlock; return cudaSuccess;
    case cudaDevAttrWarpSize: *value = 32; return cudaSuccess;
    default:
      report("cudaDeviceGetAttribute: attribute " + std::to_string(static_cast<int>(attr)) +
             " is not emulated (add it to test/cuemu/src/cudart.cpp)");
      return remember(cudaErrorInvalidValue);
  }
}
cudaError_t cudaDeviceSynchronize(void) {
  if (capturing_streams > 0) return remember(cudaErrorStreamCaptureUnsupported);
  return cudaSuccess;
}

// ---------------------------------------------------------------- memory
cudaError_t cudaMalloc(void** ptr, size_t bytes) {
  if (capture_forbids_unsafe_calls()) return remember(cudaErrorStreamCaptureUnsupported);
  std::lock_guard<std::mutex> g(memory_mu);
  if (bytes > memory_limit() - std::min(memory_limit(), device_bytes_in_use)) {
    return remember(cudaErrorMemoryAllocation);
  }
  void* m = nullptr;
  if (posix_memalign(&m, 256, std::max<size_t>(bytes, 1)) != 0) return remember(cudaErrorMemoryAllocation);
  std::memset(m, 0xff, bytes);
  allocations()[reinterpret_cast<std::uintptr_t>(m)] = {bytes, false};
  device_bytes_in_use += bytes;
  *ptr = m;
  return cudaSuccess;
}
cudaError_t cudaFree(void* ptr) {
  if (!ptr) return cudaSuccess;
  if (capture_forbids_unsafe_calls()) return remember(cudaErrorStreamCaptureUnsupported);
  std::lock_guard<std::mutex> g(memory_mu);
  const auto it = allocations().find(reinterpret_cast<std::uintptr_t>(ptr));
  if (it == allocations().end() || it->second.pinned_host) {
    report("cudaFree(" + fmt_pointer(ptr) + "): not a live cudaMalloc allocation");
    return remember(cudaErrorInvalidValue);
  }
  device_bytes_in_use -= it->second.bytes;
  allocations().erase(it);
  std::free(ptr);
  return cudaSuccess;
}
cudaError_t cudaHostAlloc(void** ptr, size_t bytes, unsigned int) {
  void* m = nullptr;
  if (posix_memalign(&m, 256, std::max<size_t>(bytes, 1)) != 0) return remember(cudaErrorMemoryAllocation);
  std::lock_guard<std::mutex> g(memory_mu);
  allocations()[reinterpret_cast<std::uintptr_t>(m)] = {bytes, true};
  *ptr = m;
  return cudaSuccess;
}
cudaError_t cudaFreeHost(void* ptr) {
  if (!ptr) return cudaSuccess;
  std::lock_guard<std::mutex> g(memory_mu);
  const auto it = allocations().find(reinterpret_cast<std::uintptr_t>(ptr));
  if (it == allocations().end() || !it->second.pinned_host) {
    report("cudaFreeHost(" + fmt_pointer(ptr) + "): not a live cudaHostAlloc allocation");
    return remember(cudaErrorInvalidValue);
  }
  allocations().erase(it);
  std::free(ptr);
  return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, enum cudaMemcpyKind kind, cudaStream_t stream) {
  if (bytes == 0) return cudaSuccess;
  const bool dst_device = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
  const bool src_device = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
  if ((dst_device && !is_device_range(dst, bytes)) || (src_device && !is_device_range(src, bytes))) {
    report("cudaMemcpyAsync of " + std::to_string(bytes) + " bytes from " + fmt_pointer(src) + " to " +
           fmt_pointer(dst) + ": the device side is not inside one allocation");
    return remember(cudaErrorInvalidValue);
  }
  if (kind != cudaMemcpyHostToDevice && kind != cudaMemcpyDeviceToHost && kind != cudaMemcpyDeviceToDevice) {
    report("cudaMemcpyAsync: only explicit directions are emulated");
    return remember(cudaErrorInvalidValue);
  }
  submit(stream, [=] { std::memcpy(dst, src, bytes); });
  return cudaSuccess;
}
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, enum cudaMemcpyKind kind) {
  if (capture_forbids_unsafe_calls()) return remember(cudaErrorStreamCaptureUnsupported);
  return cudaMemcpyAsync(dst, src, bytes, kind, nullptr);
}
cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t stream) {
  if (bytes == 0) return cudaSuccess;
  if (!is_device_range(dst, bytes)) {
    report("cudaMemsetAsync of " + std::to_string(bytes) + " bytes at " + fmt_pointer(dst) +
           ": not inside one device allocation");
    return remember(cudaErrorInvalidValue);
  }
  submit(stream, [=] { std::memset(dst, value, bytes); });
  return cudaSuccess;
}
cudaError_t cudaMemset(void* dst, int value, size_t bytes) { return cudaMemsetAsync(dst, value, bytes, nullptr); }

// ---------------------------------------------------------------- streams and events
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int) {
  *stream = new CUstream_st;
  return cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t* stream) { return cudaStreamCreateWithFlags(stream, 0); }
cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  if (stream && stream->capturing) --capturing_streams;
  delete stream;
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  if (stream && stream->capturing) {
    stream->invalidated = true;
    return remember(cudaErrorStreamCaptureUnsupported);
  }
  if (!stream && capturing_streams > 0) return remember(cudaErrorStreamCaptureUnsupported);
  return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int) {
  *event = new CUevent_st;
  return cudaSuccess;
}
cudaError_t cudaEventCreate(cudaEvent_t* event) { return cudaEventCreateWithFlags(event, 0); }
cudaError_t cudaEventRecord(cudaEvent_t, cudaStream_t) { return cudaSuccess; }
cudaError_t cudaEventSynchronize(cudaEvent_t) {
  if (capture_forbids_unsafe_calls()) return remember(cudaErrorStreamCaptureUnsupported);
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t event) {
  delete event;
  return cudaSuccess;
}

// ---------------------------------------------------------------- graphs
cudaError_t cudaStreamBeginCapture(cudaStream_t stream, enum cudaStreamCaptureMode) {
  if (!stream) return remember(cudaErrorStreamCaptureUnsupported);  // the legacy stream cannot be captured
  if (stream->capturing) return remember(cudaErrorIllegalState);
  stream->capturing = true;
  stream->invalidated = false;
  stream->recorded.clear();
  ++capturing_streams;
  return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph) {
  *graph = nullptr;
  if (!stream || !stream->capturing) return remember(cudaErrorIllegalState);
  stream->capturing = false;
  --capturing_streams;
  if (stream->invalidated) {
    stream->recorded.clear();
    return remember(cudaErrorStreamCaptureInvalidated);
  }
  *graph = new CUgraph_st{std::move(stream->recorded)};
  stream->recorded.clear();
  return cudaSuccess;
}
cudaError_t cudaStreamIsCapturing(cudaStream_t stream, enum cudaStreamCaptureStatus* status) {
  *status = stream && stream->capturing
                ? (stream->invalidated ? cudaStreamCaptureStatusInvalidated : cudaStreamCaptureStatusActive)
                : cudaStreamCaptureStatusNone;
  return cudaSuccess;
}
cudaError_t cudaThreadExchangeStreamCaptureMode(enum cudaStreamCaptureMode* mode) {
  std::swap(*mode, thread_capture_mode);
  return cudaSuccess;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long) {
  if (!graph) return remember(cudaErrorInvalidValue);
  *exec = new CUgraphExec_st{graph->ops};
  return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
  if (!exec) return remember(cudaErrorInvalidValue);
  for (const auto& op : exec->ops) submit(stream, op);
  return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  delete graph;
  return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  delete exec;
  return cudaSuccess;
}

// ---------------------------------------------------------------- kernel attributes
cudaError_t cudaFuncSetAttribute(const void* func, enum cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) {
    report("cudaFuncSetAttribute: only MaxDynamicSharedMemorySize is emulated");
    return remember(cudaErrorInvalidValue);
  }
  if (value < 0 || static_cast<std::size_t>(value) > device::kMaxOptinSmem) return remember(cudaErrorInvalidValue);
  device::set_dynamic_smem_limit(func, static_cast<std::size_t>(value));
  return cudaSuccess;
}
cudaError_t cudaFuncGetAttributes(struct cudaFuncAttributes* attr, const void* func) {
  *attr = cudaFuncAttributes{};
  attr->maxThreadsPerBlock = device::kMaxThreadsPerBlock;
  attr->maxDynamicSharedSizeBytes = static_cast<int>(device::dynamic_smem_limit(func));
  // The static shared memory of a kernel is known only to ptxas; cuemu checks static + dynamic when a
  // block runs instead (simt.cpp) and scripts/check-cuda-resources checks the compiled sizes.
  attr->sharedSizeBytes = 0;
  attr->ptxVersion = attr->binaryVersion = device::kComputeMajor * 10 + device::kComputeMinor;
  return cudaSuccess;
}

}  // extern "C"
