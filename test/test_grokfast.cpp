// Grokfast EMA and MA filters (experiments/methods/grokfast.h) against sequences computed by hand, the reference
// code's window semantics, state round trips, and (with a GPU) the CUDA passes against the CPU.
#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include <cmath>

#include "experiments/methods/grokfast.h"
#include "support.h"

using namespace tg;
using namespace tgtest;
using Catch::Matchers::ContainsSubstring;

// Grokfast filters ignore the step they are called for.
const StepContext kAnyStep{};

namespace {

// Two parameters, padded to 64 entries each: w [2], b [1].
ParameterTable small_table(DType dtype = DType::f64, Device device = Device::cpu()) {
  return ParameterTable({{"w", {2}}, {"b", {1}}}, dtype, device);
}

// Sets the gradients to w = [t, -t], b = [2 t].
void set_grads(const ParameterTable& t, double step) {
  Tensor gw = t[0].grad(), gb = t[1].grad();
  gw.copy_from_(Tensor::from_vector<double>({step, -step}, {2}).to(t.dtype()).to(t.device()));
  gb.copy_from_(Tensor::from_vector<double>({2 * step}, {1}).to(t.dtype()).to(t.device()));
}

std::vector<double> grads(const ParameterTable& t) { return values(t.flat_grads()); }

// The flat buffer: w at 0, 1; b at 64; zeros elsewhere.
void check_flat(const ParameterTable& t, double scalar) {
  const std::vector<double> g = grads(t);
  REQUIRE(g.size() == 128);
  CHECK(g[0] == scalar);
  CHECK(g[1] == -scalar);
  CHECK(g[64] == 2 * scalar);
  double padding = 0.0;
  for (std::size_t i = 0; i < g.size(); ++i) {
    if (i != 0 && i != 1 && i != 64) padding += std::abs(g[i]);
  }
  CHECK(padding == 0.0);
}

}  // namespace

TEST_CASE("Grokfast EMA follows a sequence computed by hand", "[grokfast]") {
  for (DType dtype : {DType::f64, DType::f32}) {
    CAPTURE(dtype_name(dtype));
    ParameterTable t = small_table(dtype);
    GrokfastEma ema(t, {0.5, 2.0});
    // Scalar gradients 1, 2, 3, 4 with alpha 0.5, lambda 2:
    //   mu = 1 (the first g), 1.5, 2.25, 3.125;  g' = g + 2 mu = 3, 5, 7.5, 10.25.
    const double expected[] = {3.0, 5.0, 7.5, 10.25};
    for (int step = 1; step <= 4; ++step) {
      set_grads(t, step);
      ema.transform(t, kAnyStep);
      check_flat(t, expected[step - 1]);
    }
    CHECK(ema.steps() == 4);
  }
  const GrokfastEmaConfig defaults;
  CHECK(defaults.alpha == 0.98);
  CHECK(defaults.lambda == 2.0);
}

TEST_CASE("Grokfast MA changes nothing until the window is full, then adds lambda * mean", "[grokfast]") {
  for (DType dtype : {DType::f64, DType::f32}) {
    CAPTURE(dtype_name(dtype));
    ParameterTable t = small_table(dtype);
    GrokfastMa ma(t, {3, 5.0});
    // Scalar gradients 1..6, window 3, lambda 5: steps 1, 2 unchanged; then g + 5 mean(last 3 raw g):
    //   3 + 5*2 = 13, 4 + 5*3 = 19, 5 + 5*4 = 25, 6 + 5*5 = 31.
    const double expected[] = {1.0, 2.0, 13.0, 19.0, 25.0, 31.0};
    for (int step = 1; step <= 6; ++step) {
      set_grads(t, step);
      ma.transform(t, kAnyStep);
      check_flat(t, expected[step - 1]);
      CHECK(ma.held() == std::min(step, 3));
    }
  }
  // Window 1: every step doubles-and-more: g + lambda g.
  ParameterTable t = small_table();
  GrokfastMa ma1(t, {1, 5.0});
  set_grads(t, 2);
  ma1.transform(t, kAnyStep);
  check_flat(t, 12.0);
  const GrokfastMaConfig defaults;
  CHECK(defaults.window == 100);
  CHECK(defaults.lambda == 5.0);
}

TEST_CASE("Grokfast MA's running sum stays exact over many steps", "[grokfast]") {
  // Random gradients of very different sizes; compare with the mean recomputed from the raw history.
  for (DType dtype : {DType::f64, DType::f32}) {
    CAPTURE(dtype_name(dtype));
    ParameterTable t({{"p", {40}}}, dtype, Device::cpu());
    const std::int64_t window = 7;
    const double lambda = 3.0;
    GrokfastMa ma(t, {window, lambda});
    Rng rng(3);
    std::vector<std::vector<double>> history;
    double worst = 0.0;
    for (int step = 0; step < 400; ++step) {
      const double scale = std::pow(10.0, static_cast<double>(step % 9) - 4.0);
      Tensor g = t[0].grad();
      g.copy_from_(random(rng, {40}, dtype, -scale, scale));
      history.push_back(values(g));
      ma.transform(t, kAnyStep);
      if (static_cast<std::int64_t>(history.size()) < window) continue;
      std::vector<double> expected(40);
      for (std::size_t i = 0; i < 40; ++i) {
        double mean = 0.0;
        for (std::size_t k = history.size() - window; k < history.size(); ++k) mean += history[k][i];
        expected[i] = history.back()[i] + lambda * mean / static_cast<double>(window);
      }
      const std::vector<double> got = values(t[0].grad());
      worst = std::max(worst, rel_error(got, expected));
    }
    INFO("worst relative error " << worst);
    CHECK(worst < (dtype == DType::f64 ? 1e-14 : 1e-6));
  }
}

TEST_CASE("Grokfast state round trip continues the same sequence", "[grokfast][checkpoint]") {
  for (bool use_ma : {false, true}) {
    CAPTURE(use_ma);
    ParameterTable a = small_table(), b = small_table();
    auto make = [&](const ParameterTable& t) {
      return use_ma ? make_grokfast_ma(t, {4, 5.0}) : make_grokfast_ema(t, {0.9, 2.0});
    };
    auto fa = make(a);
    for (int step = 1; step <= 6; ++step) {
      set_grads(a, step);
      fa->transform(a, kAnyStep);
    }
    // Save (copies, as a checkpoint would), load into a fresh filter, continue both.
    std::map<std::string, Tensor> saved;
    for (const auto& [key, value] : fa->state()) saved[key] = value.clone();
    auto fb = make(b);
    fb->load_state(saved, fa->steps());
    CHECK(fb->steps() == 6);
    for (int step = 7; step <= 10; ++step) {
      set_grads(a, step);
      set_grads(b, step);
      fa->transform(a, kAnyStep);
      fb->transform(b, kAnyStep);
      CHECK(grads(a) == grads(b));
    }
    // Bad state: missing buffer, wrong size, negative steps; nothing changes.
    auto fc = make(b);
    std::map<std::string, Tensor> missing = saved;
    missing.erase(missing.begin());
    CHECK_THROWS_WITH(fc->load_state(missing, 3), ContainsSubstring("missing buffer"));
    std::map<std::string, Tensor> wrong = saved;
    wrong.begin()->second = Tensor::zeros({5}, DType::f64);
    CHECK_THROWS_WITH(fc->load_state(wrong, 3), ContainsSubstring("state: buffer"));
    CHECK_THROWS_WITH(fc->load_state(saved, -1), ContainsSubstring("negative step count"));
    CHECK(fc->steps() == 0);
  }
}

TEST_CASE("Grokfast settings and tables are checked", "[grokfast][errors]") {
  ParameterTable t = small_table();
  CHECK_THROWS_WITH(GrokfastEma(t, {1.0, 2.0}), ContainsSubstring("alpha must lie in [0, 1)"));
  CHECK_THROWS_WITH(GrokfastEma(t, {0.5, -1.0}), ContainsSubstring("lambda must be >= 0"));
  CHECK_THROWS_WITH(GrokfastMa(t, {0, 5.0}), ContainsSubstring("at least 1 gradient"));
  GrokfastEma ema(t, {});
  ParameterTable other({{"w", {300}}}, DType::f64, Device::cpu());
  CHECK_THROWS_WITH(ema.transform(other, kAnyStep), ContainsSubstring("do not match the filter's state"));
}

TEST_CASE("Grokfast filters on the GPU match the CPU", "[grokfast][cuda]") {
  if (!cuda_is_available()) SKIP("no CUDA GPU: " + cuda_unavailable_reason());
  for (bool use_ma : {false, true}) {
    CAPTURE(use_ma);
    ParameterTable cpu({{"w", {33, 7}}, {"b", {5}}}, DType::f64, Device::cpu());
    ParameterTable gpu({{"w", {33, 7}}, {"b", {5}}}, DType::f32, Device::cuda(0));
    auto fc = use_ma ? make_grokfast_ma(cpu, {5, 5.0}) : make_grokfast_ema(cpu, {0.98, 2.0});
    auto fg = use_ma ? make_grokfast_ma(gpu, {5, 5.0}) : make_grokfast_ema(gpu, {0.98, 2.0});
    Rng rng(8);
    for (int step = 0; step < 12; ++step) {
      const Tensor g = random(rng, {cpu.padded_numel()});
      const Tensor g_masked = mul(g, Tensor::from_vector<double>([&] {
                                      std::vector<double> m(static_cast<std::size_t>(cpu.padded_numel()), 0.0);
                                      for (std::size_t i = 0; i < cpu.size(); ++i) {
                                        for (std::int64_t k = 0; k < cpu[i].numel(); ++k) {
                                          m[static_cast<std::size_t>(cpu.offset(i) + k)] = 1.0;
                                        }
                                      }
                                      return m;
                                    }(), {cpu.padded_numel()}));
      Tensor a = cpu.flat_grads(), b = gpu.flat_grads();
      a.copy_from_(g_masked);
      b.copy_from_(g_masked.to(DType::f32).to(Device::cuda(0)));
      fc->transform(cpu, kAnyStep);
      fg->transform(gpu, kAnyStep);
      CHECK(rel_error(gpu.flat_grads(), cpu.flat_grads()) < 1e-5);
    }
  }
}
