// Second-order autograd on whole models: Hessian-vector products of the Transformer loss and
// hypergradients through unrolled SGD and Adam steps, against float64 finite differences.
#include <catch2/catch_test_macros.hpp>

#include <cmath>

#include "engine/second_order.h"
#include "models/transformer.h"
#include "optim/differentiable_step.h"
#include "support.h"

using namespace tg;
using namespace tgtest;

namespace {

struct TinyModel {
  Transformer model;
  ParameterTable table;
  TinyModel()
      : model([] {
          TransformerConfig c;
          c.vocab = 7;
          c.seq_len = 4;
          c.width = 8;
          c.heads = 2;
          c.layers = 1;
          return c;
        }()),
        table(model.parameter_specs(), DType::f64, Device::cpu()) {
    Rng rng(11);
    model.initialize(table, rng);
  }
  TensorList detached_params() const {
    TensorList ps;
    for (const Tensor& p : table.values()) ps.push_back(p.detach().clone());
    return ps;
  }
};

TensorList with_requires_grad(const TensorList& xs) {
  TensorList out;
  for (const Tensor& x : xs) out.push_back(x.detach().clone().set_requires_grad(true));
  return out;
}

double dot(const TensorList& a, const TensorList& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const auto x = values(a[i]), y = values(b[i]);
    for (std::size_t k = 0; k < x.size(); ++k) s += x[k] * y[k];
  }
  return s;
}

TensorList axpy(const TensorList& x, double a, const TensorList& y) {  // x + a y, not recorded
  NoGradGuard no_grad;
  TensorList out;
  for (std::size_t i = 0; i < x.size(); ++i) out.push_back(add(x[i], scale(y[i], a)));
  return out;
}

TensorList random_like(Rng& rng, const TensorList& xs) {
  TensorList out;
  for (const Tensor& x : xs) out.push_back(random(rng, x.shape()));
  return out;
}

}  // namespace

TEST_CASE("Hessian-vector products of the Transformer loss match finite differences of gradients",
          "[second-order][hvp]") {
  TinyModel m;
  Rng rng(3);
  const Tensor ids = random_ids(rng, {6, 4}, 7), targets = random_ids(rng, {6}, 7);
  const TensorList theta = m.detached_params();
  auto gradient_at = [&](const TensorList& at) {
    tape().clear();
    TensorList leaves = with_requires_grad(at);
    TensorList g = grad({cross_entropy(m.model.forward(leaves, ids), targets)}, leaves);
    tape().clear();
    return g;
  };
  auto hvp_at = [&](const TensorList& at, const TensorList& v) {
    tape().clear();
    TensorList leaves = with_requires_grad(at);
    TensorList hv = hessian_vector_product(cross_entropy(m.model.forward(leaves, ids), targets), leaves, v);
    tape().clear();
    return hv;
  };
  const TensorList v = random_like(rng, theta), w = random_like(rng, theta);
  const TensorList hv = hvp_at(theta, v);

  // (g(theta + h v) - g(theta - h v)) / 2h -> H v
  const double h = 1e-5;
  const TensorList gp = gradient_at(axpy(theta, h, v)), gm = gradient_at(axpy(theta, -h, v));
  std::vector<double> numeric, analytic;
  for (std::size_t i = 0; i < theta.size(); ++i) {
    const auto a = values(gp[i]), b = values(gm[i]), c = values(hv[i]);
    for (std::size_t k = 0; k < a.size(); ++k) {
      numeric.push_back((a[k] - b[k]) / (2 * h));
      analytic.push_back(c[k]);
    }
  }
  CHECK(rel_error(analytic, numeric) < 1e-6);

  // The Hessian is symmetric: w . (H v) == v . (H w).
  const TensorList hw = hvp_at(theta, w);
  const double a = dot(w, hv), b = dot(v, hw);
  CHECK(std::fabs(a - b) <= 1e-10 * std::max(1.0, std::fabs(a)));
}

namespace {

// The computation a hypergradient differentiates: T inner steps on the training batches with the
// gradient of tensor i scaled by exp(phi[i]) (a stand-in for a learned gradient transform), then
// the loss on the outer batch at the resulting parameters.
struct Unrolled {
  const TinyModel& m;
  std::vector<Tensor> inner_ids, inner_targets;
  Tensor outer_ids, outer_targets;
  std::string optimizer;  // "sgd" | "adam"
  double lr;

  Tensor outer_loss(const TensorList& theta0, const Tensor& phi, bool record) const {
    TensorList theta = theta0;
    AdamMoments moments = AdamMoments::zeros_like(theta0);
    const AdamConfig adam{0.9, 0.98, 1e-8, 1e-2, false};
    for (std::size_t k = 0; k < inner_ids.size(); ++k) {
      Tensor loss = cross_entropy(m.model.forward(theta, inner_ids[k]), inner_targets[k]);
      TensorList g = grad({loss}, theta, {}, {.create_graph = record});
      for (std::size_t i = 0; i < g.size(); ++i) g[i] = mul(g[i], exp(slice(phi, 0, static_cast<std::int64_t>(i), 1)));
      theta = optimizer == "sgd" ? sgd_update(theta, g, lr) : adam_update(theta, g, moments, adam, lr);
    }
    return cross_entropy(m.model.forward(theta, outer_ids), outer_targets);
  }
};

}  // namespace

TEST_CASE("hypergradients through unrolled SGD and Adam steps match finite differences",
          "[second-order][hypergradient]") {
  TinyModel m;
  struct Case {
    std::string optimizer;
    int steps;
    double lr;
  };
  for (const Case& c : std::vector<Case>{{"sgd", 1, 0.5}, {"sgd", 2, 0.5}, {"sgd", 3, 0.5}, {"adam", 2, 0.05}}) {
    DYNAMIC_SECTION(c.optimizer << " x" << c.steps) {
      Rng rng(17);
      Unrolled u{m, {}, {}, random_ids(rng, {8, 4}, 7), random_ids(rng, {8}, 7), c.optimizer, c.lr};
      for (int k = 0; k < c.steps; ++k) {
        u.inner_ids.push_back(random_ids(rng, {6, 4}, 7));
        u.inner_targets.push_back(random_ids(rng, {6}, 7));
      }
      const TensorList theta0 = m.detached_params();
      const Tensor phi0 = random(rng, {static_cast<std::int64_t>(theta0.size())}, DType::f64, -0.5, 0.5);

      // Analytic: one recorded unroll, one backward to phi and theta0.
      tape().clear();
      TensorList theta_leaves = with_requires_grad(theta0);
      Tensor phi = phi0.clone().set_requires_grad(true);
      TensorList wrt = theta_leaves;
      wrt.push_back(phi);
      const TensorList hyper = grad({u.outer_loss(theta_leaves, phi, true)}, wrt);
      tape().clear();

      // Numeric, phi: every entry by central differences of the outer loss.
      auto loss_at = [&](const TensorList& theta, const Tensor& p) {
        tape().clear();
        TensorList leaves = with_requires_grad(theta);
        const double value = u.outer_loss(leaves, p, false).item();
        tape().clear();
        return value;
      };
      const double h = 1e-6;
      std::vector<double> numeric_phi;
      for (std::int64_t i = 0; i < phi0.numel(); ++i) {
        Tensor plus = phi0.clone(), minus = phi0.clone();
        plus.data<double>()[i] += h;
        minus.data<double>()[i] -= h;
        numeric_phi.push_back((loss_at(theta0, plus) - loss_at(theta0, minus)) / (2 * h));
      }
      const double phi_error = rel_error(values(hyper.back()), numeric_phi);
      INFO("d outer / d phi relative error " << phi_error);
      CHECK(phi_error < 1e-6);

      // Numeric, theta0: the directional derivative along a random direction.
      const TensorList dir = random_like(rng, theta0);
      const double numeric_dir = (loss_at(axpy(theta0, h, dir), phi0) - loss_at(axpy(theta0, -h, dir), phi0)) / (2 * h);
      const TensorList hyper_theta(hyper.begin(), hyper.end() - 1);
      const double analytic_dir = dot(hyper_theta, dir);
      INFO("d outer / d theta0 along a direction: " << analytic_dir << " vs " << numeric_dir);
      CHECK(std::fabs(analytic_dir - numeric_dir) < 1e-6 * std::max(1.0, std::fabs(numeric_dir)));
    }
  }
}

TEST_CASE("a window of unrolled steps is freed by clearing the tape", "[second-order][memory]") {
  TinyModel m;
  Rng rng(5);
  const Tensor ids = random_ids(rng, {6, 4}, 7), targets = random_ids(rng, {6}, 7);
  tape().clear();
  TensorList theta = with_requires_grad(m.detached_params());
  for (int k = 0; k < 3; ++k) {
    Tensor loss = cross_entropy(m.model.forward(theta, ids), targets);
    theta = sgd_update(theta, grad({loss}, theta, {}, {.create_graph = true}), 0.1);
  }
  CHECK(tape().num_nodes() > 0);
  CHECK(theta[0].requires_grad());
  tape().clear();
  CHECK(tape().num_nodes() == 0);
  CHECK(!theta[0].requires_grad());  // the window's results are constants now: truncation
}

namespace {

TensorList to_device(const TensorList& xs, Device device, DType dtype) {
  TensorList out;
  for (const Tensor& x : xs) out.push_back(x.to(dtype).to(device));
  return out;
}

std::vector<double> flat_values(const TensorList& xs) {
  std::vector<double> out;
  for (const Tensor& x : xs) {
    const auto v = values(x.to(Device::cpu()));
    out.insert(out.end(), v.begin(), v.end());
  }
  return out;
}

}  // namespace

TEST_CASE("second order on the GPU matches the CPU float64 result", "[cuda][second-order]") {
  if (!cuda_is_available()) SKIP("no CUDA GPU: " + cuda_unavailable_reason());
  TinyModel m;
  Rng rng(8);
  const Tensor ids = random_ids(rng, {6, 4}, 7), targets = random_ids(rng, {6}, 7);
  const TensorList theta = m.detached_params();
  const TensorList v = random_like(rng, theta);

  SECTION("Hessian-vector product of the Transformer loss") {
    auto hvp_on = [&](Device device, DType dtype) {
      tape().clear();
      TensorList leaves = with_requires_grad(to_device(theta, device, dtype));
      TensorList hv = hessian_vector_product(cross_entropy(m.model.forward(leaves, ids.to(device)), targets.to(device)),
                                             leaves, to_device(v, device, dtype));
      tape().clear();
      return flat_values(hv);
    };
    const auto ref = hvp_on(Device::cpu(), DType::f64);
    const auto gpu = hvp_on(Device::cuda(0), DType::f32);
    const double err = rel_error(gpu, ref);
    INFO("HVP relative error " << err);
    CHECK(err < 1e-4);
    CHECK(hvp_on(Device::cuda(0), DType::f32) == gpu);  // bit-identical run to run
  }

  SECTION("hypergradient through 2 unrolled Adam steps") {
    auto hyper_on = [&](Device device, DType dtype) {
      Rng r(21);
      Unrolled u{m, {}, {}, random_ids(r, {8, 4}, 7).to(device), random_ids(r, {8}, 7).to(device), "adam", 0.05};
      for (int k = 0; k < 2; ++k) {
        u.inner_ids.push_back(random_ids(r, {6, 4}, 7).to(device));
        u.inner_targets.push_back(random_ids(r, {6}, 7).to(device));
      }
      const Tensor phi0 = random(r, {static_cast<std::int64_t>(theta.size())}, DType::f64, -0.5, 0.5);
      tape().clear();
      TensorList leaves = with_requires_grad(to_device(theta, device, dtype));
      Tensor phi = phi0.to(dtype).to(device).set_requires_grad(true);
      TensorList wrt = leaves;
      wrt.push_back(phi);
      const TensorList hyper = grad({u.outer_loss(leaves, phi, true)}, wrt);
      tape().clear();
      return flat_values(hyper);
    };
    const auto ref = hyper_on(Device::cpu(), DType::f64);
    const auto gpu = hyper_on(Device::cuda(0), DType::f32);
    const double err = rel_error(gpu, ref);
    INFO("hypergradient relative error " << err);
    CHECK(err < 1e-3);
  }
}
