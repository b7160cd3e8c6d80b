// The CPU kernels' work sharing (kernels/cpu/parallel.h): every index covered once, and results that
// are bit-identical whatever the thread count, because chunk boundaries depend on shapes only.
#include <catch2/catch_test_macros.hpp>

#include <atomic>
#include <bit>
#include <cmath>
#include <vector>

#include "engine/backend.h"
#include "experiments/training/trainer.h"
#include "kernels/cpu/parallel.h"
#include "run_support.h"
#include "support.h"

using namespace tg;
using namespace tgtest;

namespace {
// Restores the thread count a test changed.
struct ThreadCountGuard {
  int saved = cpu::cpu_threads();
  ~ThreadCountGuard() { cpu::set_cpu_threads(saved); }
};
}  // namespace

TEST_CASE("parallel_for covers every index exactly once, in grain-sized chunks", "[cpu][threads]") {
  ThreadCountGuard guard;
  for (int threads : {1, 2, 5}) {
    cpu::set_cpu_threads(threads);
    for (std::int64_t n : {0, 1, 7, 64, 1000, 4097}) {
      for (std::int64_t grain : {1, 3, 64, 5000}) {
        CAPTURE(threads, n, grain);
        std::vector<std::atomic<int>> hits(static_cast<std::size_t>(n));
        std::atomic<bool> aligned{true};
        cpu::parallel_for(n, grain, [&](std::int64_t b, std::int64_t e) {
          if (b % grain != 0 || (e != n && e - b != grain)) aligned = false;
          for (std::int64_t i = b; i < e; ++i) hits[static_cast<std::size_t>(i)]++;
        });
        bool once = true;
        for (const auto& h : hits) once = once && h.load() == 1;
        CHECK(once);
        CHECK(aligned);
      }
    }
  }
}

TEST_CASE("a parallel_for inside a chunk runs inline and still covers its range", "[cpu][threads]") {
  ThreadCountGuard guard;
  cpu::set_cpu_threads(3);
  std::vector<std::atomic<int>> hits(40 * 30);
  cpu::parallel_for(40, 1, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t i = b; i < e; ++i) {
      cpu::parallel_for(30, 4, [&](std::int64_t jb, std::int64_t je) {
        for (std::int64_t j = jb; j < je; ++j) hits[static_cast<std::size_t>(i * 30 + j)]++;
      });
    }
  });
  bool once = true;
  for (const auto& h : hits) once = once && h.load() == 1;
  CHECK(once);
}

TEST_CASE("training steps are bit-identical for any number of CPU kernel threads", "[cpu][threads]") {
  ThreadCountGuard guard;
  // Big enough that every parallel kernel splits into many chunks: [256, 256] MLP activations.
  auto final_state = [](int threads, const std::string& method) {
    cpu::set_cpu_threads(threads);
    TrainConfig c = tiny_run_config(fresh_temp_dir("threads-" + method + std::to_string(threads)));
    c.width = 64;
    c.heads = 4;
    c.layers = 2;
    c.batch_size = 64;
    c.method = method;
    if (method == "neuralgrok") c.outer_fraction = 0.05;
    Trainer t(c);
    std::vector<double> losses;
    for (int i = 0; i < 4; ++i) losses.push_back(t.step().loss);
    std::vector<double> state = losses;
    for (const Tensor& p : t.params().values()) {
      const auto v = values(p);
      state.insert(state.end(), v.begin(), v.end());
    }
    return state;
  };
  for (const char* method : {"standard", "neuralgrok"}) {
    CAPTURE(method);
    const std::vector<double> one = final_state(1, method);
    for (int threads : {2, 3, 8}) {
      CAPTURE(threads);
      CHECK(final_state(threads, method) == one);
    }
  }
}

TEST_CASE("whole-tensor reductions match a float64 sum and are bit-identical for any thread count",
          "[cpu][threads]") {
  ThreadCountGuard guard;
  Rng rng(11);
  // Sizes around the reduction's 4096-element blocks and 8 lanes, and a parameter vector's size.
  for (std::int64_t n : {1, 7, 4096, 4097, 3 * 4096 + 5, 422656}) {
    const Tensor x = random(rng, {n}, DType::f32);
    const std::vector<double> xs = values(x);
    double sum = 0.0, squares = 0.0, entropy = 0.0;
    for (double v : xs) {
      sum += v;
      squares += v * v;
      entropy += v == 0.0 ? 0.0 : -std::fabs(v) * std::log(std::fabs(v));
    }
    for (const auto& [op, reference] : {std::pair{ReduceOp::sum, sum}, std::pair{ReduceOp::sum_squares, squares},
                                        std::pair{ReduceOp::abs_entropy, entropy}}) {
      CAPTURE(n, static_cast<int>(op));
      std::vector<float> results;
      for (int threads : {1, 2, 3, 8}) {
        cpu::set_cpu_threads(threads);
        const Tensor out = Tensor::zeros({}, DType::f32);
        backend_for(Device::cpu()).reduce_all(op, x, out);
        results.push_back(static_cast<float>(values(out)[0]));
      }
      // Accumulated in double and rounded once: the float64 sum rounded to float, give or take an ulp.
      CHECK(std::fabs(results[0] - reference) <= 2e-7 * std::max(1.0, std::fabs(reference)));
      for (float r : results) CHECK(std::bit_cast<std::uint32_t>(r) == std::bit_cast<std::uint32_t>(results[0]));
    }
  }
}
