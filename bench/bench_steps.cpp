// Whole-step benchmarks: training steps of every gradient method, and the second-order machinery
// (Hessian-vector products, unrolled hypergradients) as multiples of one plain gradient.
//
//   tapegrok_bench_steps [--device cpu|cuda|auto] [--repeats N] [--json FILE] [--sections ...] [--tiny]
//
// Sections: train (ms per optimizer step: standard Adam, Grokfast EMA and MA, NeuralGrok inner step,
// one lookahead meta step on its own, NeuralGrok steps with the lookahead and unrolled meta-gradients
// amortised over T = 4), second-order (gradient, HVP, hypergradient through T = 1 and 4 unrolled steps,
// with the peak memory of each). The default model and task: the 2-layer width-128 4-head Transformer,
// a+b mod 97, batch 512, amplifier (128,128). --tiny: 1 layer, width 32, batch 64, amplifier (8,8), a
// smoke run of a few seconds. bench/pytorch_steps.py times the same steps in PyTorch, and
// bench/compare_with_pytorch.py pairs the rows by name (bench/README.md).
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/backend.h"
#include "engine/error.h"
#include "engine/ops.h"
#include "engine/second_order.h"
#include "experiments/methods/neuralgrok.h"
#include "experiments/training/tasks.h"
#include "experiments/training/trainer.h"
#include "optim/amplifier.h"
#include "optim/differentiable_step.h"

using namespace tg;

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// Median seconds of `repeats` calls of f after `warmup` calls (the device synchronised around each).
template <class F>
double median_seconds(Device device, int warmup, int repeats, F&& f) {
  Backend& be = backend_for(device);
  for (int i = 0; i < warmup; ++i) f();
  be.synchronize();
  std::vector<double> samples;
  for (int i = 0; i < repeats; ++i) {
    const double start = now();
    f();
    be.synchronize();
    samples.push_back(now() - start);
  }
  std::sort(samples.begin(), samples.end());
  return samples[samples.size() / 2];
}

struct Row {
  std::string section, name;
  double ms;
  double ratio;         // against the section's baseline
  double peak_mib = 0;  // allocator peak during the measurement (0: not measured)
  double gemm_gflop = 0;  // matrix-product work per step (0: not counted)
};

// Median seconds per step of a trainer's steps, timed `per_sample` consecutive steps at a time, over
// `repeats` samples whose every step had a full batch. An epoch ends with a short batch (a+b's 4704
// training examples are 9 batches of 512 and one of 96; 2 examples with NeuralGrok's outer set held
// out), which takes a fraction of a full step's time; PyTorch's side (bench/pytorch_steps.py) times
// full batches only, so a sample holding a short batch is run but not counted. Samples start at a
// multiple of per_sample steps from the trainer's first step, so blocks of 4 hold one NeuralGrok meta
// step (T 4) each; the device is synchronised around each sample only.
// Also returns the GEMM GFLOP per step of the counted samples (a replayed CUDA graph dispatches none).
struct StepTiming {
  double seconds, gemm_gflop;
};
StepTiming median_full_batch_seconds(Device device, Trainer& t, int warmup, int repeats, int per_sample) {
  Backend& be = backend_for(device);
  for (int i = 0; i < warmup * per_sample; ++i) t.step();
  be.synchronize();
  std::vector<double> samples;
  std::uint64_t flops = 0;
  for (int tries = 0; static_cast<int>(samples.size()) < repeats; ++tries) {
    // Short batches come once per epoch (>= 2 full batches at the bench's sizes), so most samples count.
    TG_CHECK(tries < 4 * repeats + 8, "bench: {} of {} samples of {} steps held a full batch in every step",
             samples.size(), tries, per_sample);
    bool full = true;
    const std::uint64_t flops_before = matmul_flops_dispatched();
    const double start = now();
    for (int k = 0; k < per_sample; ++k) full &= t.step().examples == t.config().batch_size;
    be.synchronize();
    const double seconds = now() - start;
    if (!full) continue;
    samples.push_back(seconds / per_sample);
    flops += matmul_flops_dispatched() - flops_before;
  }
  std::sort(samples.begin(), samples.end());
  return {samples[samples.size() / 2],
          static_cast<double>(flops) * 1e-9 / static_cast<double>(repeats) / static_cast<double>(per_sample)};
}

// GFLOP that one call of f sends to matmul/linear.
template <class F>
double gemm_gflop_of(F&& f) {
  const std::uint64_t before = matmul_flops_dispatched();
  f();
  return static_cast<double>(matmul_flops_dispatched() - before) * 1e-9;
}

// The GEMM ceiling: a square f32 product through the backend (1024^3 on the CPU, 4096^3 on a GPU),
// GFLOP/s, median of 5 after one warm-up call.
double gemm_ceiling_gflops(Device device) {
  const std::int64_t n = device.is_cuda() ? 4096 : 1024;
  Rng rng(1);
  const Tensor a = uniform_tensor(rng, {n, n}, -1, 1, DType::f32, device);
  const Tensor b = uniform_tensor(rng, {n, n}, -1, 1, DType::f32, device);
  const Tensor out = Tensor::empty({n, n}, DType::f32, device);
  Backend& be = backend_for(device);
  const double s = median_seconds(device, 1, 5, [&] { be.gemm(a, b, out, false, false, 1.0, 0.0); });
  return 2.0 * static_cast<double>(n * n * n) / s * 1e-9;
}

// The benchmark's model and data sizes: the NeuralGrok defaults, or the --tiny smoke sizes.
struct Sizes {
  std::int64_t layers = 2, width = 128, heads = 4, batch = 512;
  std::string amp_hidden = "128,128";
  std::string describe() const {
    return fmt::format("Transformer ({} layer{}, d {}, {} heads), a+b mod 97, batch {}, amplifier ({})", layers,
                       layers > 1 ? "s" : "", width, heads, batch, amp_hidden);
  }
};

TrainConfig base_config(const std::string& device, const Sizes& z) {
  TrainConfig c;
  c.device = device;
  c.layers = z.layers;
  c.width = z.width;
  c.heads = z.heads;
  c.batch_size = z.batch;
  c.amp_hidden = z.amp_hidden;
  c.run_dir = "/tmp/tapegrok_bench_steps";
  c.progress = false;
  c.max_steps = 1 << 30;
  return c;
}

std::size_t peak_bytes(Device device) { return backend_for(device).allocator().stats().peak_bytes_in_use; }

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"tapegrok whole-step benchmarks"};
  std::string device_name = "auto", json_path, sections = "train,second-order";
  int repeats = 10, warmup = 2;
  bool tiny = false;
  app.add_option("--device", device_name)->capture_default_str();
  app.add_option("--repeats", repeats)->capture_default_str();
  app.add_option("--warmup", warmup)->capture_default_str();
  app.add_option("--json", json_path);
  app.add_option("--sections", sections)->capture_default_str();
  app.add_flag("--tiny", tiny, "1 layer, width 32, batch 64, amplifier (8,8): a smoke run");
  CLI11_PARSE(app, argc, argv);
  try {
    const Device device = parse_device(device_name);
    Sizes sizes;
    if (tiny) sizes = Sizes{1, 32, 4, 64, "8,8"};
    std::vector<Row> rows;
    fmt::print("tapegrok_bench_steps on {} — {}\n", device.str(), sizes.describe());
    const double ceiling = gemm_ceiling_gflops(device);
    fmt::print("GEMM ceiling: {:.1f} GFLOP/s ({}^3 f32 through the backend); floor = a step's GEMM GFLOP at that rate\n",
               ceiling, device.is_cuda() ? 4096 : 1024);

    if (sections.find("train") != std::string::npos) {
      // time_steps: median ms of one Trainer::step (forward, backward, gradient method, optimizer), the
      // same work as one iteration of `tapegrok train` without evaluation or logging.
      struct Result {
        std::string name;
        double seconds, gemm_gflop = 0;
      };
      auto time_steps = [&](const std::string& name, TrainConfig c, int extra_warmup = 0) {
        c.device = device.str();
        Trainer t(c);
        const StepTiming timing = median_full_batch_seconds(device, t, warmup + extra_warmup, repeats, 1);
        return Result{name, timing.seconds, timing.gemm_gflop};
      };
      std::vector<Result> results;
      TrainConfig c = base_config(device.str(), sizes);
      const TrainConfig c0 = c;
      // The baseline every other row is a multiple of.
      results.push_back(time_steps("standard Adam step", c));
      // Grokfast's EMA filter (alpha 0.98, lambda 2) on the gradient, then Adam.
      c.method = "grokfast-ema";
      results.push_back(time_steps("Grokfast-EMA step", c));
      // Grokfast's MA filter with its window of 100 gradients full (100 extra warm-up steps fill it).
      c.method = "grokfast-ma";
      results.push_back(time_steps("Grokfast-MA step (window 100, full)", c, 100));
      // NeuralGrok as the official code runs it: c 0.2, clip 1.0, 1% of the data as the outer set.
      TrainConfig ng = base_config(device.str(), sizes);
      ng.method = "neuralgrok";
      ng.outer_fraction = 0.01;
      ng.amp_c = 0.2;
      ng.clip_grad_norm = 1.0;
      // Inner step: the frozen amplifier rewrites every gradient tensor, clip, Adam. No meta step.
      ng.amp_frozen = true;
      results.push_back(time_steps("NeuralGrok inner step", ng));
      ng.amp_frozen = false;
      {
        // The lookahead meta step on its own: theta' = theta - lr G_phi(g) with one batch's raw gradient
        // g held constant, L_outer(theta') on the whole outer set, d/dphi, the amplifier's Adam step.
        // Called through the public NeuralGrok::meta_step_lookahead, as its transform() calls it every
        // T-th step, on a gradient computed once beforehand (the inner step's work is not in this row).
        Trainer t(ng);
        t.step();  // a normal step first, so every optimizer state exists
        const ParameterTable& p = t.params();
        Tensor ids, targets;
        std::vector<std::int64_t> batch(t.split().train.begin(), t.split().train.begin() + ng.batch_size);
        gather_examples(t.dataset(), batch, device, ids, targets);
        tape().clear();
        p.zero_grad();
        backward(cross_entropy(t.model().forward(p.values(), ids), targets));  // the raw gradient g
        tape().clear();
        const double s = median_seconds(device, warmup, repeats, [&] {
          NeuralGrok& method = *t.method<NeuralGrok>();
          method.prepare({ng.meta_every, false, &t.model()});  // a meta step's number
          method.meta_step_lookahead(t.model(), p, ng.lr);
        });
        results.push_back({"NeuralGrok lookahead meta step alone", s});  // (GEMMs of the meta step not counted)
      }
      // Whole NeuralGrok steps: T = 4 inner steps with one meta step, timed as a block of 4, per step.
      for (const char* mode : {"lookahead", "unrolled"}) {
        ng.meta_grad = mode;
        ng.device = device.str();
        Trainer t(ng);
        const StepTiming timing = median_full_batch_seconds(device, t, 1, std::max(3, repeats / 3), 4);
        results.push_back({fmt::format("NeuralGrok step, {} meta (T 4, amortised)", mode), timing.seconds,
                           timing.gemm_gflop});
      }
      // Sync-free steps (--cuda-graph) as a run takes them: blocks of 4 back-to-back steps with no wait
      // between them, per step. On a GPU the warm-up (8 steps) covers the eager first steps and the
      // graph captures; on the CPU they run eagerly.
      // gemm_gflop: a replayed graph dispatches no ops, so the GEMM work is that of the same eager step.
      auto time_sync_free = [&](const std::string& name, TrainConfig cfg, double gemm_gflop) {
        cfg.device = device.str();
        cfg.cuda_graph = true;
        Trainer t(cfg);
        const StepTiming timing = median_full_batch_seconds(device, t, 2, std::max(3, repeats / 3), 4);
        return Result{name, timing.seconds, gemm_gflop};
      };
      const double plain_gflop = results[0].gemm_gflop, lookahead_gflop = results[results.size() - 2].gemm_gflop;
      results.push_back(time_sync_free("standard Adam step, --cuda-graph", c0, plain_gflop));
      ng.meta_grad = "lookahead";
      results.push_back(time_sync_free("NeuralGrok step, lookahead (T 4), --cuda-graph", ng, lookahead_gflop));
      const double base = results[0].seconds;
      for (const Result& r : results) rows.push_back({"train", r.name, 1e3 * r.seconds, r.seconds / base, 0, r.gemm_gflop});
    }

    if (sections.find("second-order") != std::string::npos) {
      TrainConfig c = base_config(device.str(), sizes);
      Trainer t(c);
      const ParameterTable& p = t.params();
      Tensor ids, targets;
      std::vector<std::int64_t> examples(t.split().train.begin(), t.split().train.begin() + c.batch_size);
      gather_examples(t.dataset(), examples, device, ids, targets);
      Rng rng(3);
      TensorList v;
      for (const Tensor& x : p.values()) v.push_back(normal_tensor(rng, x.shape(), 0, 1, x.dtype(), device));
      Backend& be = backend_for(device);
      auto measure = [&](const std::string& name, auto&& f) {
        be.allocator().reset_peak();
        const double s = median_seconds(device, warmup, repeats, f);
        const double mib = static_cast<double>(peak_bytes(device)) / 1048576.0;
        return Row{"second-order", name, 1e3 * s, 0, mib, gemm_gflop_of(f)};
      };
      auto loss_at = [&](const TensorList& theta) { return cross_entropy(t.model().forward(theta, ids), targets); };
      Row g = measure("gradient (forward + backward)", [&] {
        tape().clear();
        (void)grad({loss_at(p.values())}, p.values());
        tape().clear();
      });
      rows.push_back(g);
      rows.push_back(measure("Hessian-vector product", [&] {
        tape().clear();
        (void)hessian_vector_product(loss_at(p.values()), p.values(), v);
        tape().clear();
      }));
      // Hypergradient of the loss after T recorded SGD steps with respect to a per-tensor log-scale
      // of each gradient (the shape of NeuralGrok's unrolled meta-gradient, without the amplifier).
      for (int steps : {1, 4}) {
        rows.push_back(measure(fmt::format("hypergradient through {} unrolled SGD step{}", steps, steps > 1 ? "s" : ""), [&] {
          tape().clear();
          Tensor phi = Tensor::zeros({static_cast<std::int64_t>(p.size())}, p.dtype(), device).set_requires_grad(true);
          TensorList theta;
          for (const Tensor& x : p.values()) theta.push_back(x.detach().clone().set_requires_grad(true));
          for (int k = 0; k < steps; ++k) {
            TensorList gk = grad({loss_at(theta)}, theta, {}, {.create_graph = true});
            for (std::size_t i = 0; i < gk.size(); ++i) gk[i] = mul(gk[i], exp(slice(phi, 0, static_cast<std::int64_t>(i), 1)));
            theta = sgd_update(theta, gk, 1e-3);
          }
          (void)grad({loss_at(theta)}, {phi});
          tape().clear();
        }));
      }
      const double base = g.ms;
      for (Row& r : rows) {
        if (r.section == "second-order") r.ratio = r.ms / base;
      }
    }

    fmt::print("\n{:<14} {:<52} {:>10} {:>9} {:>10} {:>10} {:>9}\n", "section", "measurement", "ms", "x base",
               "peak MiB", "GEMM GFLOP", "x floor");
    for (const Row& r : rows) {
      const bool counted = r.gemm_gflop > 0;
      fmt::print("{:<14} {:<52} {:>10.2f} {:>9.2f} {:>10} {:>10} {:>9}\n", r.section, r.name, r.ms, r.ratio,
                 r.peak_mib > 0 ? fmt::format("{:.0f}", r.peak_mib) : "",
                 counted ? fmt::format("{:.3f}", r.gemm_gflop) : "",
                 counted ? fmt::format("{:.2f}", r.ms / (r.gemm_gflop / ceiling * 1e3)) : "");
    }
    if (!json_path.empty()) {
      nlohmann::json j = nlohmann::json::array();
      for (const Row& r : rows) {
        j.push_back({{"section", r.section}, {"name", r.name}, {"ms", r.ms}, {"ratio", r.ratio}, {"peak_mib", r.peak_mib},
                     {"device", device.str()}, {"config", sizes.describe()}});
        if (r.gemm_gflop > 0) {
          j.back()["gemm_gflop"] = r.gemm_gflop;
          j.back()["gemm_ceiling_gflops"] = ceiling;
        }
      }
      std::ofstream(json_path) << j.dump(2) << "\n";
    }
  } catch (const std::exception& e) {
    fmt::print(stderr, "tapegrok_bench_steps: error: {}\n", e.what());
    return 1;
  }
  return 0;
}
