// The CPU kernels' floating-point mode (kernels/cpu/float_mode.h): with flushing on, a result that
// IEEE arithmetic makes subnormal is 0 and a subnormal input reads as 0, on every thread that computes
// (the caller, the pool's workers, OpenBLAS's workers); with it off, gradual underflow as IEEE 754
// says. The expected values are plain float arithmetic outside the kernels with the flush bits cleared,
// and results are compared as bit patterns: the test's own thread runs under DAZ too (the executable
// sets it at start), where a subnormal compares equal to 0.
#include <catch2/catch_test_macros.hpp>

#include <bit>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "engine/ops.h"
#include "kernels/cpu/float_mode.h"
#include "kernels/cpu/parallel.h"
#include "support.h"

using namespace tg;
using namespace tgtest;

namespace {

struct FlushGuard {  // restores the setting and the thread count a test changed
  bool saved = cpu::flush_subnormals();
  int threads = cpu::cpu_threads();
  ~FlushGuard() {
    cpu::set_flush_subnormals(saved);
    cpu::set_cpu_threads(threads);
  }
};

// What IEEE float arithmetic gives for a * b, computed with the thread's own flush bits cleared.
float ieee_product(float a, float b) {
  const unsigned saved = cpu::float_control();
  cpu::set_float_control(saved & ~cpu::subnormal_flush_bits());
  volatile float x = a, y = b;
  const float p = x * y;
  cpu::set_float_control(saved);
  return p;
}

std::uint32_t bits(float x) { return std::bit_cast<std::uint32_t>(x); }
bool subnormal(float x) { return (bits(x) & 0x7f800000u) == 0 && (bits(x) & 0x007fffffu) != 0; }

}  // namespace

TEST_CASE("elementwise kernels flush subnormal results and inputs to zero on every pool thread", "[cpu][float-mode]") {
  FlushGuard guard;
  // Large enough that the pool cuts it into many chunks.
  const std::int64_t n = 1 << 18;
  std::vector<float> a(n), b(n);
  for (std::int64_t i = 0; i < n; ++i) {
    a[i] = i % 2 == 0 ? 1e-20f : 3e-41f;  // the second is itself subnormal (read as 0 under DAZ)
    b[i] = i % 2 == 0 ? 1e-20f : 1e10f;
  }
  const float product_of_normals = ieee_product(1e-20f, 1e-20f);  // 1e-40
  const float product_of_subnormal = ieee_product(3e-41f, 1e10f);  // 3e-31
  REQUIRE(subnormal(product_of_normals));
  REQUIRE(product_of_subnormal > 1e-32f);  // a normal number: DAZ does not touch the comparison

  for (int threads : {1, 3}) {
    for (bool flush : {true, false}) {
      CAPTURE(threads, flush);
      cpu::set_cpu_threads(threads);
      cpu::set_flush_subnormals(flush);
      const std::vector<float> out = mul(Tensor::from_vector(a, {n}), Tensor::from_vector(b, {n})).to_vector<float>();
      bool all = true;
      for (std::int64_t i = 0; i < n && all; ++i) {
        const float want = flush ? 0.0f : (i % 2 == 0 ? product_of_normals : product_of_subnormal);
        all = bits(out[static_cast<std::size_t>(i)]) == bits(want);
        if (!all) UNSCOPED_INFO("element " << i << ": bits " << bits(out[static_cast<std::size_t>(i)]) << " != " << bits(want));
      }
      CHECK(all);
    }
  }
}

TEST_CASE("a GEMM on several OpenBLAS threads reads subnormal operands as zero", "[cpu][float-mode]") {
  const char* setting = std::getenv("TAPEGROK_FLUSH_SUBNORMALS");
  if (setting != nullptr && std::strcmp(setting, "0") == 0) {
    SKIP("TAPEGROK_FLUSH_SUBNORMALS=0: OpenBLAS's workers started without the flush (float_mode.h)");
  }
  FlushGuard guard;
  cpu::set_flush_subnormals(true);
  // 512 x 512 x 512: OpenBLAS splits it over its workers, which inherit the mode from the main thread.
  const std::int64_t m = 512;
  std::vector<float> a(m * m, 3e-41f), b(m * m, 1e10f);
  for (std::int64_t i = 0; i < m; ++i) a[i * m + i] = 1.0f;  // one normal entry per row: the result is b's column
  const std::vector<float> out = matmul(Tensor::from_vector(a, {m, m}), Tensor::from_vector(b, {m, m})).to_vector<float>();
  // IEEE would add 511 * 3e-41 * 1e10 ~ 1.5e-28 to 1e10: invisible in float, so check a product of
  // subnormals alone too.
  bool all = true;
  for (float x : out) all = all && bits(x) == bits(1e10f);
  CHECK(all);

  std::vector<float> tiny(m * m, 3e-41f), ones(m * m, 1e10f);
  const std::vector<float> flushed =
      matmul(Tensor::from_vector(tiny, {m, m}), Tensor::from_vector(ones, {m, m})).to_vector<float>();
  REQUIRE(ieee_product(3e-41f, 1e10f) > 1e-31f);  // each product would be ~3e-31 without the flush
  bool zero = true;
  for (float x : flushed) zero = zero && bits(x) == 0;
  CHECK(zero);
}

TEST_CASE("a kernel call leaves the caller's floating-point mode as it was", "[cpu][float-mode]") {
  FlushGuard guard;
  const unsigned before = cpu::float_control();
  for (bool flush : {false, true}) {
    cpu::set_flush_subnormals(flush);
    (void)values(add(Tensor::full({1000}, 1.0, DType::f32), Tensor::full({1000}, 2.0, DType::f32)));
    CHECK(cpu::float_control() == before);
  }
}
