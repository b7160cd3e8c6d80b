// Optimizers and gradient transforms against per-element references written from torch.optim's
// documented update rules.
#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include <cmath>

#include "optim/gradient_transforms.h"
#include "optim/optimizer.h"
#include "support.h"

using namespace tg;
using namespace tgtest;

namespace {
// A table of two small parameters with given values and gradients.
ParameterTable table(Rng& rng, DType dt) {
  ParameterTable t({{"w", {3, 5}}, {"b", {7}}}, dt, Device::cpu());
  for (std::size_t i = 0; i < t.size(); ++i) {
    Tensor p = t[i];
    p.copy_from_(random(rng, p.shape(), dt));
    Tensor g = p.grad();
    g.copy_from_(random(rng, p.shape(), dt));
  }
  return t;
}
std::vector<double> all(const ParameterTable& t, bool grads) {
  std::vector<double> v;
  for (std::size_t i = 0; i < t.size(); ++i) {
    auto x = values(grads ? t[i].grad() : t[i]);
    v.insert(v.end(), x.begin(), x.end());
  }
  return v;
}
}  // namespace

TEST_CASE("Adam and AdamW follow torch.optim over several steps", "[optim]") {
  for (bool decoupled : {false, true}) {
    CAPTURE(decoupled);
    Rng rng(1);
    ParameterTable t = table(rng, DType::f64);
    std::vector<double> p = all(t, false), m(p.size(), 0.0), v(p.size(), 0.0);
    const double lr = 0.01, b1 = 0.9, b2 = 0.98, eps = 1e-8, wd = 0.1;
    auto adam = make_adam(t, {b1, b2, eps, wd, decoupled});
    for (int step = 1; step <= 5; ++step) {
      for (std::size_t i = 0; i < t.size(); ++i) {  // a fresh gradient each step
        Tensor g = t[i].grad();
        g.copy_from_(random(rng, g.shape()));
      }
      const std::vector<double> g = all(t, true);
      for (std::size_t i = 0; i < p.size(); ++i) {
        double gi = g[i];
        if (decoupled) p[i] *= 1 - lr * wd; else gi += wd * p[i];
        m[i] = b1 * m[i] + (1 - b1) * gi;
        v[i] = b2 * v[i] + (1 - b2) * gi * gi;
        const double mhat = m[i] / (1 - std::pow(b1, step)), vhat = v[i] / (1 - std::pow(b2, step));
        p[i] -= lr * mhat / (std::sqrt(vhat) + eps);
      }
      adam->step(t, lr);
    }
    CHECK(rel_error(all(t, false), p) < 1e-12);
    CHECK(adam->steps_taken() == 5);
  }
}

TEST_CASE("SGD with momentum follows torch.optim", "[optim]") {
  Rng rng(2);
  ParameterTable t = table(rng, DType::f64);
  std::vector<double> p = all(t, false), buf(p.size(), 0.0);
  const double lr = 0.1, mu = 0.9, wd = 0.01;
  auto sgd = make_sgd(t, {mu, wd});
  for (int step = 0; step < 4; ++step) {
    const std::vector<double> g = all(t, true);
    for (std::size_t i = 0; i < p.size(); ++i) {
      const double gi = g[i] + wd * p[i];
      buf[i] = step == 0 ? gi : mu * buf[i] + gi;
      p[i] -= lr * buf[i];
    }
    sgd->step(t, lr);
  }
  CHECK(rel_error(all(t, false), p) < 1e-12);
}

TEST_CASE("linear warm-up starts at zero and reaches the peak after warmup steps", "[optim]") {
  CHECK(warmup_lr(1e-3, 0, 10) == 0.0);
  CHECK(warmup_lr(1e-3, 5, 10) == 0.5e-3);
  CHECK(warmup_lr(1e-3, 10, 10) == 1e-3);
  CHECK(warmup_lr(1e-3, 500, 10) == 1e-3);
  CHECK(warmup_lr(1e-3, 0, 0) == 1e-3);
}

TEST_CASE("global norm clipping and per-tensor normalisation", "[optim]") {
  Rng rng(3);
  ParameterTable t = table(rng, DType::f64);
  const std::vector<double> g = all(t, true);
  double norm = 0;
  for (double x : g) norm += x * x;
  norm = std::sqrt(norm);
  CHECK(std::fabs(global_grad_norm(t).item() - norm) < 1e-12);
  // A large max norm leaves gradients unchanged; a small one rescales to it.
  clip_grad_norm(t, norm * 2);
  CHECK(all(t, true) == g);
  clip_grad_norm(t, 0.5);
  CHECK(std::fabs(global_grad_norm(t).item() - 0.5 * norm / (norm + 1e-6)) < 1e-12);
  // Per tensor: each tensor's gradient gets norm c.
  normalize_grads_per_tensor(t, 0.3);
  for (std::size_t i = 0; i < t.size(); ++i) CHECK(std::fabs(l2_norm(t[i].grad()).item() - 0.3) < 1e-12);
  // Direction kept.
  const auto w = values(t[0].grad());
  CHECK(std::fabs(w[0] / w[1] - g[0] / g[1]) < 1e-9 * std::fabs(g[0] / g[1]));
}

namespace {
// Adam (coupled and decoupled decay) and SGD with and without momentum, host scalars and device scalars, float32,
// with a limit that clips and one that does not: the fused clip leaves the parameters exactly as
// clip_grad_norm followed by the step does, and the gradients unclipped.
void check_fused_clip(Device device) {
  for (const char* kind : {"adam", "adamw", "sgd", "sgd-plain"}) {
    for (double max_norm : {0.05, 1e6}) {
      for (bool device_scalars : {false, true}) {
        CAPTURE(kind, max_norm, device_scalars);
        auto make = [&](const ParameterTable& t) {
          if (std::string(kind) == "sgd") return make_sgd(t, {0.9, 0.01});
          if (std::string(kind) == "sgd-plain") return make_sgd(t, {0.0, 0.01});
          return make_adam(t, {0.9, 0.98, 1e-8, 0.1, std::string(kind) == "adamw"});
        };
        auto on_device = [&](std::uint64_t seed) {
          Rng r(seed);
          const ParameterTable host = table(r, DType::f32);
          ParameterTable t({{"w", {3, 5}}, {"b", {7}}}, DType::f32, device);
          Tensor values = t.flat_values();
          values.copy_from_(host.flat_values());
          return t;
        };
        ParameterTable separate = on_device(7), fused = on_device(7);
        auto opt_separate = make(separate), opt_fused = make(fused);
        Rng grads(9);
        for (int step = 0; step < 3; ++step) {
          const double lr = 0.01 * (step + 1);
          for (std::size_t i = 0; i < fused.size(); ++i) {  // the same fresh gradient in both tables
            const Tensor g = random(grads, fused[i].shape(), DType::f32);
            Tensor gf = fused[i].grad(), gs = separate[i].grad();
            gf.copy_from_(g);
            gs.copy_from_(g);
          }
          auto take_step = [&](Optimizer& opt, const ParameterTable& t, const GradClip& clip) {
            if (!device_scalars) return opt.step(t, lr, clip);
            const Tensor sc = Tensor::zeros({static_cast<std::int64_t>(opt.device_scalars(lr).size())}, DType::f32, device);
            opt.upload_device_scalars(lr, sc);
            opt.step_from_device(t, sc, clip);
          };
          clip_grad_norm(separate, max_norm);
          take_step(*opt_separate, separate, GradClip{});
          const std::vector<double> raw = all(fused, true);
          take_step(*opt_fused, fused, deferred_clip_grad_norm(fused, max_norm));
          CHECK(all(fused, false) == all(separate, false));
          CHECK(all(fused, true) == raw);
          if (max_norm < 1) CHECK(all(fused, true) != all(separate, true));  // the limit did clip
        }
      }
    }
  }
}

// A NaN in one gradient makes the global norm NaN: clip_grad_norm then turns every gradient into NaN,
// and the fused clip must do the same to every parameter rather than skip the clip.
void check_fused_clip_nan_norm(Device device) {
  for (const char* kind : {"adam", "sgd"}) {
    CAPTURE(kind);
    Rng r(3);
    const ParameterTable host = table(r, DType::f32);
    ParameterTable t({{"w", {3, 5}}, {"b", {7}}}, DType::f32, device);
    Tensor values = t.flat_values();
    values.copy_from_(host.flat_values());
    Tensor grads = t.flat_grads();
    std::vector<float> g(static_cast<std::size_t>(grads.numel()), 0.25f);
    g[4] = std::nanf("");
    grads.copy_from_(Tensor::from_vector(g, {grads.numel()}));
    auto opt = std::string(kind) == "sgd" ? make_sgd(t, {0.9, 0.0}) : make_adam(t, {});
    opt->step(t, 0.01, deferred_clip_grad_norm(t, 1.0));
    for (double p : all(t, false)) CHECK(std::isnan(p));
  }
}
}  // namespace

TEST_CASE("a clip fused into the update gives the parameters of clip_grad_norm then the step, bit for bit",
          "[optim][fused]") {
  check_fused_clip(Device::cpu());
  check_fused_clip_nan_norm(Device::cpu());
}

TEST_CASE("on a GPU, the fused clip gives the parameters of clip_grad_norm then the step, bit for bit",
          "[optim][fused][cuda]") {
  if (!cuda_is_available()) SKIP("no CUDA GPU: " + cuda_unavailable_reason());
  check_fused_clip(Device::cuda(0));
  check_fused_clip_nan_norm(Device::cuda(0));
}

TEST_CASE("a malformed clip is refused before the update", "[optim][errors]") {
  Rng rng(8);
  ParameterTable t = table(rng, DType::f32);
  const std::vector<double> before = all(t, false);
  auto adam = make_adam(t, {});
  CHECK_THROWS_WITH(adam->step(t, 0.1, GradClip{Tensor::zeros({2}, DType::f32), 1.0}),
                    Catch::Matchers::ContainsSubstring("clip norm must be one f32 value"));
  CHECK_THROWS_WITH(adam->step(t, 0.1, GradClip{Tensor::zeros({}, DType::f32), 0.0}),
                    Catch::Matchers::ContainsSubstring("clip limit must be positive"));
  CHECK(all(t, false) == before);
  CHECK(adam->steps_taken() == 0);
}
