#include "support.h"

#include <sys/resource.h>

#include <cmath>
#include <csignal>
#include <limits>
#include <stdexcept>

namespace tgtest {

std::vector<double> values(const Tensor& t) {
  const Tensor c = t.device().is_cpu() ? t : t.to(tg::Device::cpu());
  switch (c.dtype()) {
    case DType::f64: return c.to_vector<double>();
    case DType::f32: {
      auto v = c.to_vector<float>();
      return {v.begin(), v.end()};
    }
    case DType::i32: {
      auto v = c.to_vector<std::int32_t>();
      return {v.begin(), v.end()};
    }
  }
  return {};
}

double rel_error(const std::vector<double>& out, const std::vector<double>& ref) {
  if (out.size() != ref.size()) return std::numeric_limits<double>::infinity();
  double diff = 0.0, norm = 0.0, norm_out = 0.0;
  for (std::size_t i = 0; i < out.size(); ++i) {
    if (!std::isfinite(out[i]) || !std::isfinite(ref[i])) return std::numeric_limits<double>::infinity();
    diff += (out[i] - ref[i]) * (out[i] - ref[i]);
    norm += ref[i] * ref[i];
    norm_out += out[i] * out[i];
  }
  if (norm == 0.0) return std::sqrt(norm_out);
  return std::sqrt(diff / norm);
}

double rel_error(const Tensor& out, const Tensor& ref) {
  if (out.shape() != ref.shape()) return std::numeric_limits<double>::infinity();
  return rel_error(values(out), values(ref));
}

Tensor random(tg::Rng& rng, const Shape& shape, DType dtype, double low, double high) {
  return tg::uniform_tensor(rng, shape, low, high, dtype);
}

Tensor random_ids(tg::Rng& rng, const Shape& shape, std::int64_t below) {
  std::vector<std::int32_t> v(static_cast<std::size_t>(tg::shape_numel(shape)));
  for (auto& x : v) x = static_cast<std::int32_t>(rng.below(below));
  return Tensor::from_vector(v, shape);
}

namespace {

// Fresh leaves with the given values (so each evaluation starts from a clean tape).
TensorList as_leaves(const TensorList& inputs, const std::vector<bool>& check) {
  TensorList leaves;
  for (std::size_t k = 0; k < inputs.size(); ++k) {
    Tensor t = inputs[k].clone();
    if (check[k]) t.set_requires_grad(true);
    leaves.push_back(t);
  }
  return leaves;
}

std::vector<bool> default_check(const TensorList& inputs, std::vector<bool> check) {
  if (!check.empty()) return check;
  for (const Tensor& t : inputs) check.push_back(tg::is_floating(t.dtype()));
  return check;
}

// <w, f(x)> evaluated without recording.
double projected(const Function& f, const TensorList& xs, const Tensor& w) {
  tg::NoGradGuard no_grad;
  return tg::sum(tg::mul(f(xs), w)).item();
}

}  // namespace

GradCheckResult gradcheck(const Function& f, const TensorList& inputs, std::vector<bool> check, double step,
                          std::uint64_t seed) {
  check = default_check(inputs, check);
  tg::tape().clear();
  TensorList leaves = as_leaves(inputs, check);
  Tensor y = f(leaves);
  tg::Rng rng(seed);
  Tensor w = random(rng, y.shape());
  TensorList wrt;
  for (std::size_t k = 0; k < leaves.size(); ++k) {
    if (check[k]) wrt.push_back(leaves[k]);
  }
  TensorList analytic = tg::grad({tg::sum(tg::mul(y, w))}, wrt);
  tg::tape().clear();

  GradCheckResult result;
  std::size_t a = 0;
  for (std::size_t k = 0; k < inputs.size(); ++k) {
    if (!check[k]) continue;
    TensorList xs;
    for (const Tensor& t : inputs) xs.push_back(t.clone());
    double* data = xs[k].data<double>();
    std::vector<double> numeric(static_cast<std::size_t>(xs[k].numel()));
    for (std::int64_t i = 0; i < xs[k].numel(); ++i) {
      const double saved = data[i];
      data[i] = saved + step;
      const double plus = projected(f, xs, w);
      data[i] = saved - step;
      const double minus = projected(f, xs, w);
      data[i] = saved;
      numeric[static_cast<std::size_t>(i)] = (plus - minus) / (2.0 * step);
    }
    const double err = rel_error(values(analytic[a++]), numeric);
    if (err > result.max_rel_error || std::isnan(err)) {
      result.max_rel_error = err;
      result.worst = "input " + std::to_string(k);
    }
  }
  return result;
}

GradCheckResult gradgradcheck(const Function& f, const TensorList& inputs, double step, std::uint64_t seed) {
  // g(x) = d<w, f(x)>/dx (all floating inputs, concatenated as separate outputs); check g's
  // derivative in direction of each input through gradcheck on a function that returns one gradient.
  const std::vector<bool> check = default_check(inputs, {});
  tg::Rng rng(seed);
  Tensor w;
  {
    tg::NoGradGuard no_grad;
    w = random(rng, f(inputs).shape());
  }
  GradCheckResult worst;
  for (std::size_t j = 0; j < inputs.size(); ++j) {
    if (!check[j]) continue;
    Function g = [&, j](const TensorList& xs) {
      // Differentiate with the tape even inside gradcheck's no-grad evaluations; record the
      // backward itself only when the caller records (the analytic pass).
      const bool outer_recording = tg::grad_mode_enabled();
      tg::GradModeGuard on(true);
      TensorList leaves;
      for (std::size_t k = 0; k < xs.size(); ++k) {
        Tensor t = xs[k];
        if (check[k] && !t.requires_grad()) t = t.clone().set_requires_grad(true);
        leaves.push_back(t);
      }
      Tensor y = f(leaves);
      TensorList gs = tg::grad({tg::sum(tg::mul(y, w))}, {leaves[j]}, {}, {.create_graph = outer_recording});
      if (!outer_recording) tg::tape().clear();
      return gs[0];
    };
    GradCheckResult r = gradcheck(g, inputs, check, step, seed + j + 1);
    if (r.max_rel_error > worst.max_rel_error || std::isnan(r.max_rel_error)) {
      worst.max_rel_error = r.max_rel_error;
      worst.worst = "d/dx of grad wrt input " + std::to_string(j) + ", " + r.worst;
    }
  }
  return worst;
}

FileSizeLimit::FileSizeLimit(unsigned long bytes) {
  old_handler_ = std::signal(SIGXFSZ, SIG_IGN);
  rlimit limit{};
  ::getrlimit(RLIMIT_FSIZE, &limit);
  old_soft_limit_ = limit.rlim_cur;
  limit.rlim_cur = bytes;
  if (::setrlimit(RLIMIT_FSIZE, &limit) != 0) throw std::runtime_error("FileSizeLimit: setrlimit failed");
}

FileSizeLimit::~FileSizeLimit() {
  rlimit limit{};
  ::getrlimit(RLIMIT_FSIZE, &limit);
  limit.rlim_cur = old_soft_limit_;
  ::setrlimit(RLIMIT_FSIZE, &limit);
  std::signal(SIGXFSZ, old_handler_);
}

}  // namespace tgtest
