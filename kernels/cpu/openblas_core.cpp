#include "kernels/cpu/openblas_core.h"

#include <cblas.h>
#include <cpuid.h>

#include <cstdint>
#include <cstdlib>

namespace tg::cpu {

namespace {

// AVX-512 F, DQ, BW and VL in CPUID leaf 7, and the OS saving the ZMM state (XCR0 bits 1-2 and 5-7):
// what OpenBLAS's SkylakeX kernels use. Raw CPUID, since this runs before any constructor.
bool has_avx512_skylakex() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid(1, &a, &b, &c, &d) == 0 || (c & bit_OSXSAVE) == 0) return false;
  std::uint32_t xcr0_lo = 0, xcr0_hi = 0;
  __asm__("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
  if ((xcr0_lo & 0xE6) != 0xE6) return false;
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d) == 0) return false;
  const unsigned needed = bit_AVX512F | bit_AVX512DQ | bit_AVX512BW | bit_AVX512VL;
  return (b & needed) == needed;
}

}  // namespace

const char* preferred_openblas_core() { return has_avx512_skylakex() ? "SkylakeX" : nullptr; }

void choose_openblas_core() {
  auto unset = [](const char* name) {
    const char* v = std::getenv(name);
    return v == nullptr || *v == '\0';
  };
  const char* core = preferred_openblas_core();
  if (core != nullptr && unset("OPENBLAS_CORETYPE")) setenv("OPENBLAS_CORETYPE", core, 1);
  if (unset("OPENBLAS_THREAD_TIMEOUT")) setenv("OPENBLAS_THREAD_TIMEOUT", kOpenBlasThreadTimeout, 1);
}

std::string openblas_core() {
  const char* name = openblas_get_corename();
  return name != nullptr ? name : "unknown";
}

}  // namespace tg::cpu
