#include "kernels/cpu/float_mode.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

#if defined(__SSE__)
#include <xmmintrin.h>
#endif

namespace tg::cpu {

namespace {

bool setting_from_environment() {
  const char* v = std::getenv("TAPEGROK_FLUSH_SUBNORMALS");
  return v == nullptr || std::strcmp(v, "0") != 0;
}

std::atomic<bool>& setting() {
  static std::atomic<bool> flush{setting_from_environment()};
  return flush;
}

}  // namespace

unsigned subnormal_flush_bits() {
#if defined(__SSE__)
  return _MM_FLUSH_ZERO_ON | 0x0040u;  // FTZ (bit 15) | DAZ (bit 6)
#else
  return 0;
#endif
}

bool flush_subnormals() { return setting().load(std::memory_order_relaxed); }
void set_flush_subnormals(bool flush) { setting().store(flush, std::memory_order_relaxed); }

unsigned float_control() {
#if defined(__SSE__)
  return _mm_getcsr();
#else
  return 0;
#endif
}

void set_float_control(unsigned control) {
#if defined(__SSE__)
  _mm_setcsr(control);
#else
  (void)control;
#endif
}

FloatModeScope::FloatModeScope() : saved_(float_control()) {
  const unsigned bits = subnormal_flush_bits();
  const unsigned wanted = flush_subnormals() ? (saved_ | bits) : (saved_ & ~bits);
  changed_ = wanted != saved_;
  if (changed_) set_float_control(wanted);
}

FloatModeScope::~FloatModeScope() {
  if (changed_) set_float_control(saved_);
}

}  // namespace tg::cpu
