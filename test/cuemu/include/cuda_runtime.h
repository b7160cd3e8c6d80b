// cuemu's device side: CUDA C++ device code compiled as host C++ by g++.
//
// Found before the toolkit's include folder, so a rewritten .cu file that includes <cuda_runtime.h>
// gets this header; the toolkit's own header (included below) still supplies every host type (dim3,
// cudaError_t, cudaStream_t ...). What host C++ cannot parse (`<<<...>>>`, `__shared__`) is
// rewritten by rewrite_cu.py into calls of the functions declared here; the rest is macros.
#pragma once

#define __launch_bounds__(...)
#include_next <cuda_runtime.h>
// The toolkit's header defines these as annotations g++ ignores; device code needs them as no-ops.
#undef __shared__
#define __shared__ CUEMU_SHARED_LEFT_UNREWRITTEN  // rewrite_cu.py turns every __shared__ into block_shared

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <source_location>
#include <tuple>
#include <type_traits>

namespace cuemu {

// ---------------------------------------------------------------- the running thread and block
struct ThreadState {
  uint3 tid;
  int linear = 0, lane = 0, warp = 0;
};
struct BlockState {
  uint3 bid;
  dim3 bdim, gdim;
};
// Plain globals, not thread_local: one host thread drives the emulated device (the engine's one
// stream), and g++'s UBSan misreads some extern thread_local loads after a fiber switch.
extern ThreadState* current_thread;
extern BlockState* current_block;

// ---------------------------------------------------------------- synchronisation (simt.cpp)
void syncthreads(std::source_location where);
void syncwarp(std::source_location where, unsigned mask = 0xffffffffu);
// A warp collective: every lane of `mask` deposits 8 bytes; returns lane `source(lane)`'s deposit.
enum class Shuffle { index, up, down, xor_ };
std::uint64_t warp_shuffle(Shuffle kind, unsigned mask, std::uint64_t mine, int arg, int width,
                           std::source_location where);
void threadfence();
[[noreturn]] void device_trap(const char* what, std::source_location where);
// Fails unless the block has at most `max_threads` threads (a GPU refuses such a launch).
void check_launch_bounds(long long max_threads, const char* kernel, std::source_location where);

// ---------------------------------------------------------------- shared memory (simt.cpp)
// Dynamic shared memory (`extern __shared__ T name[]`): fresh per block, poisoned with 0xFF bytes.
void* dynamic_shared_memory();
// Static shared memory: one fresh, 0xFF-poisoned object per declaration per block. `key` identifies
// the declaration (a function-local static of the rewritten code).
void* block_shared_bytes(const void* key, std::size_t bytes, std::size_t align, const char* name,
                         std::source_location where);
template <class T>
T& block_shared(const void* key, const char* name, std::source_location where = std::source_location::current()) {
  static_assert(std::is_trivially_destructible_v<T>, "shared memory holds trivial types only");
  return *static_cast<T*>(block_shared_bytes(key, sizeof(T), alignof(T), name, where));
}

template <class T>
T shuffle(Shuffle kind, std::source_location where, unsigned mask, T v, int arg, int width = 32) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "shuffles move at most 8 bytes");
  std::uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  bits = warp_shuffle(kind, mask, bits, arg, width, where);
  T r;
  std::memcpy(&r, &bits, sizeof(T));
  return r;
}

// ---------------------------------------------------------------- launches (simt.cpp)
struct LaunchConfig {
  dim3 grid, block;
  std::size_t dynamic_smem = 0;
  cudaStream_t stream = nullptr;
  LaunchConfig(dim3 g, dim3 b, std::size_t smem = 0, cudaStream_t s = nullptr)
      : grid(g), block(b), dynamic_smem(smem), stream(s) {}
};
struct LaunchSite {
  const char* kernel;  // as written at the launch ("reduce_dim_kernel<ReduceCode::sum>")
  const char* file;
  int line;
};

// Pointer arguments a kernel receives, for the host-pointer check: plain pointers, and the pointer
// members of argument structs that specialise PointerFields.
struct PointerList {
  static constexpr int kMax = 96;
  const void* at[kMax];
  int count = 0;
  void add(const void* p) {
    if (count < kMax) at[count++] = p;
  }
};
template <class T> struct PointerFields {
  static void collect(const T&, PointerList&) {}
};
template <class T> void collect_pointers(const T& arg, PointerList& out) {
  if constexpr (std::is_pointer_v<T>) out.add(static_cast<const void*>(arg));
  else PointerFields<T>::collect(arg, out);
}

// Validates the configuration, then runs (or, while the stream is captured, records) the grid;
// `body` runs one CUDA thread. The launch error, if any, is left for cudaGetLastError.
void enqueue_grid(const void* kernel, const LaunchSite& site, const LaunchConfig& cfg, std::shared_ptr<void> params,
                  void (*body)(void* params), const PointerList& pointers);

template <class Params, class Fn> struct Invoker {
  static void run(void* p) {
    auto& [fn, args] = *static_cast<std::pair<Fn, Params>*>(p);
    std::apply(fn, args);
  }
};

// kernel<<<cfg>>>(args...): the arguments are converted to the kernel's parameter types and copied
// at launch (a captured graph keeps them), as CUDA does.
template <class... P, class... A>
void launch(void (*kernel)(P...), LaunchConfig cfg, LaunchSite site, A&&... args) {
  static_assert(sizeof...(P) == sizeof...(A), "kernel launched with the wrong number of arguments");
  using Params = std::tuple<std::decay_t<P>...>;
  using Fn = void (*)(P...);
  auto state = std::make_shared<std::pair<Fn, Params>>(kernel, Params(std::forward<A>(args)...));
  PointerList pointers;
  std::apply([&](const auto&... p) { (collect_pointers(p, pointers), ...); }, state->second);
  enqueue_grid(reinterpret_cast<const void*>(kernel), site, cfg, state, &Invoker<Params, Fn>::run, pointers);
}
// A kernel template whose remaining template arguments the call deduces: called through `call`.
template <class Call, class... A>
void launch_deduced(Call call, LaunchConfig cfg, LaunchSite site, A&&... args) {
  using Params = std::tuple<std::decay_t<A>...>;
  auto state = std::make_shared<std::pair<Call, Params>>(call, Params(std::forward<A>(args)...));
  PointerList pointers;
  std::apply([&](const auto&... p) { (collect_pointers(p, pointers), ...); }, state->second);
  enqueue_grid(nullptr, site, cfg, state, &Invoker<Params, Call>::run, pointers);
}

bool is_device_pointer(const void* p);

}  // namespace cuemu

// The C++ overloads the toolkit's header declares only for nvcc.
template <class T> cudaError_t cudaFuncSetAttribute(T* f, cudaFuncAttribute a, int v) {
  return ::cudaFuncSetAttribute(reinterpret_cast<const void*>(f), a, v);
}
template <class T> cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* a, T* f) {
  return ::cudaFuncGetAttributes(a, reinterpret_cast<const void*>(f));
}

#define threadIdx (::cuemu::current_thread->tid)
#define blockIdx (::cuemu::current_block->bid)
#define blockDim (::cuemu::current_block->bdim)
#define gridDim (::cuemu::current_block->gdim)
#define warpSize 32
#define __syncthreads() ::cuemu::syncthreads(std::source_location::current())
#define __syncwarp(...) ::cuemu::syncwarp(std::source_location::current() __VA_OPT__(, ) __VA_ARGS__)
#define __shfl_sync(...) ::cuemu::shuffle(::cuemu::Shuffle::index, std::source_location::current(), __VA_ARGS__)
#define __shfl_up_sync(...) ::cuemu::shuffle(::cuemu::Shuffle::up, std::source_location::current(), __VA_ARGS__)
#define __shfl_down_sync(...) ::cuemu::shuffle(::cuemu::Shuffle::down, std::source_location::current(), __VA_ARGS__)
#define __shfl_xor_sync(...) ::cuemu::shuffle(::cuemu::Shuffle::xor_, std::source_location::current(), __VA_ARGS__)
#define __threadfence() ::cuemu::threadfence()
#define __trap() ::cuemu::device_trap("__trap()", std::source_location::current())

// Round-to-nearest intrinsics: plain operations, never contracted (the rewritten files build with
// -ffp-contract=off).
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline double __dmul_rn(double a, double b) { return a * b; }
// Device overloads CUDA puts in the global namespace.
using std::isfinite;
using std::isinf;
using std::isnan;
using std::max;
using std::min;

// Atomics: the threads of a block are fibers of one OS thread and blocks run one after another, so
// these are plain read-modify-writes; atomic_ref keeps ThreadSanitizer from calling them races.
template <class T> T atomicAdd(T* p, T v) { return std::atomic_ref<T>(*p).fetch_add(v); }
template <class T> T atomicMax(T* p, T v) {
  std::atomic_ref<T> a(*p);
  T old = a.load();
  while (old < v && !a.compare_exchange_weak(old, v)) {
  }
  return old;
}
