// GpuContext: what host code launching kernels on one GPU shares with that GPU's backend — its one
// stream (so every kernel runs in one order and the caching allocator may reuse blocks in stream
// order), its allocator, the checks of kernel arguments and the CUDA error messages. The CUDA backend
// (cuda_backend.cpp) implements it; the method kernels (cuda_method_kernels.cpp) launch through it.
// Host code only (.cpp files): it pulls in fmt.
#pragma once

#include <cuda_runtime_api.h>
#include <fmt/format.h>

#include <cstddef>
#include <initializer_list>
#include <string>

#include "engine/allocator.h"
#include "engine/error.h"
#include "engine/tensor.h"

namespace tg::cuda {

template <class T> T* ptr(const Tensor& t) { return static_cast<T*>(t.raw_data()); }

// One tensor argument of a kernel, as GpuContext::prepare checks it.
enum class Want { f32, i32, word /* f32 or i32: 4-byte moves */ };
struct Arg {
  const char* name;
  const Tensor& t;
  Want want = Want::f32;
  bool contiguous = true;
};
using Args = std::initializer_list<Arg>;

inline std::string describe(Args args) {
  std::string s;
  for (const Arg& a : args) {
    if (!s.empty()) s += ", ";
    s += fmt::format("{} {}", a.name, a.t.str());
  }
  return s;
}

class GpuContext {
 public:
  virtual int index() const = 0;
  virtual cudaStream_t stream() const = 0;
  // The GPU's caching allocator, for scratch memory (Scratch below).
  virtual CachingAllocator& caching_allocator() = 0;
  // Makes this GPU current for the calling thread (the runtime's current device is per thread).
  virtual void activate() = 0;
  // Validates the arguments of a kernel (defined, dtype, on this GPU, contiguity) and makes this GPU current.
  virtual void prepare(const char* op, Args args) = 0;
  // Throw a tg::Error naming the call (or the kernel and its arguments) and the CUDA error, if any.
  virtual void check_call(cudaError_t err, const char* call) const = 0;
  virtual void check_kernel(cudaError_t err, const char* kernel, Args args) const = 0;

 protected:
  ~GpuContext() = default;  // never deleted through this interface (the backends live forever)
};

// The context of GPU `index`: its backend (cuda_backend.h), created on first use. Throws tg::Error
// when no GPU is available or the index is out of range.
GpuContext& gpu_context(int index);

// Device memory for one call's temporaries, returned to the cache when the call returns. Safe
// while kernels still run: every later user of the block is queued behind them on the stream.
class Scratch {
 public:
  Scratch(CachingAllocator& allocator, std::size_t nbytes, const char* kernel)
      : allocator_(allocator), nbytes_(nbytes), ptr_(nullptr) {
    if (nbytes == 0) return;
    try {
      ptr_ = allocator.allocate(nbytes);
    } catch (const Error& e) {  // out of memory: say which kernel wanted the workspace
      throw Error(fmt::format("{} (workspace of cuda kernel {})", e.what(), kernel));
    }
  }
  ~Scratch() {
    if (ptr_ != nullptr) allocator_.deallocate(ptr_, nbytes_);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  void* get() const { return ptr_; }

 private:
  CachingAllocator& allocator_;
  std::size_t nbytes_;
  void* ptr_;
};

}  // namespace tg::cuda
