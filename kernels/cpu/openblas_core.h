// Which OpenBLAS kernels run the GEMMs. OpenBLAS picks its kernels when it loads, from the CPU model;
// a CPU it does not know (a virtual machine's "Intel Xeon Processor" with AVX-512, for one) can get its
// generic SSE3 kernels, measured at 64 GFLOP/s on a 2-core AVX-512 VM against 300 GFLOP/s for its
// SkylakeX kernels (docs/results/cpu_benchmarks.md). So every tapegrok executable chooses before
// OpenBLAS loads (openblas_core_preinit.cpp): OPENBLAS_CORETYPE when the user set it, else SkylakeX on
// a CPU and OS with AVX-512 F/BW/DQ/VL, else OpenBLAS's own choice. The Python package applies the same
// rule before it loads the engine. The core is part of "the same thread settings" under which runs
// are bit-identical, and a run records it (config.json: runtime.openblas_core).
#pragma once

#include <string>

namespace tg::cpu {

// "SkylakeX" where the rule above overrides OpenBLAS's detection, else null.
const char* preferred_openblas_core();

// OPENBLAS_THREAD_TIMEOUT's value, set the same way when the user has not: OpenBLAS's idle workers
// spin on sched_yield for 2^28 cycles after each product by default, taking a core from the next
// kernel on a 2-core machine; 2^4 makes them sleep at once (about 10% off a training step there,
// docs/results/cpu_benchmarks.md). It changes no result.
constexpr const char* kOpenBlasThreadTimeout = "4";

// Sets OPENBLAS_CORETYPE to preferred_openblas_core() and OPENBLAS_THREAD_TIMEOUT to
// kOpenBlasThreadTimeout, each unless set already. Only has an effect before OpenBLAS has loaded.
void choose_openblas_core();

// The kernels OpenBLAS runs with, as it names them (e.g. "SkylakeX").
std::string openblas_core();

}  // namespace tg::cpu
