// Work sharing for the CPU kernels, deterministic by construction: a loop over [0, n) is cut into
// chunks whose boundaries depend only on n and the kernel's grain, never on the thread count, and
// each chunk writes its own outputs with the same code whichever thread runs it. So every result is
// bit-identical for any thread count (tested); only which thread computes which chunk changes.
//
// Threads: TAPEGROK_CPU_THREADS, else OPENBLAS_NUM_THREADS (a sweep runs each job with one BLAS
// thread, and the kernels follow), else the hardware's. set_cpu_threads overrides both.
#pragma once

#include <cstdint>
#include <functional>

namespace tg::cpu {

int cpu_threads();
void set_cpu_threads(int threads);  // >= 1

// Calls body(begin, end) for consecutive chunks covering [0, n), each `grain` long (the last may be
// shorter), on up to cpu_threads() threads; returns when all are done. Runs inline when there is a
// single chunk or thread, or when called from inside another parallel_for.
void parallel_for(std::int64_t n, std::int64_t grain, const std::function<void(std::int64_t, std::int64_t)>& body);

// A grain for a loop of n items of `cost` elementwise operations each: chunks of about 32k
// operations, enough to amortise a thread's wake-up.
inline std::int64_t grain_for(std::int64_t cost_per_item) {
  constexpr std::int64_t kChunkWork = 1 << 15;
  const std::int64_t g = kChunkWork / (cost_per_item > 0 ? cost_per_item : 1);
  return g > 0 ? g : 1;
}

}  // namespace tg::cpu
