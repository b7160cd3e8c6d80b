// The CPU kernels' work sharing (kernels/cpu/parallel.h): every index covered once, and results that
// are bit-identical whatever the thread count, because chunk boundaries depend on shapes only.
#include <catch2/catch_test_macros.hpp>

#include <atomic>
#include <vector>

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
