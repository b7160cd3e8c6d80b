// The fused NeuralGrok amplifier op (optim/neural_amplify.cpp) against
//  - the formula written out here in float64 loops (no ops involved),
//  - Amplifier::apply_composite (the same function from primitive ops), forward and gradients,
//  - float64 finite differences (gradcheck) in g and in every weight,
// plus its loud failure for second derivatives, its input checks, and (with a GPU) the CUDA kernels
// against the CPU in float64 and run to run.
#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include <algorithm>
#include <cmath>
#include <limits>

#include "optim/amplifier.h"
#include "optim/neural_amplify.h"
#include "support.h"

using namespace tg;
using namespace tgtest;
using Catch::Matchers::ContainsSubstring;

namespace {

// A problem: flat gradient, amplifier weights and segments.
struct Problem {
  Tensor g;
  TensorList weights;
  std::vector<Segment> segments;
  std::vector<std::int64_t> hidden;
  double c = 0.7;
};

// Weights [W0 [h1, 1], b0, ..., Wk [1, hk], bk] uniform in +-1/sqrt(fan_in) (nn.Linear's range) times
// `spread`; g uniform in +-g_scale.
Problem make_problem(std::uint64_t seed, std::int64_t n, std::vector<Segment> segments, std::vector<std::int64_t> hidden,
                     DType dtype = DType::f64, double g_scale = 1e-2, double spread = 1.5) {
  Rng rng(seed);
  Problem p;
  p.g = random(rng, {n}, dtype, -g_scale, g_scale);
  p.segments = std::move(segments);
  p.hidden = hidden;
  std::int64_t in = 1;
  hidden.push_back(1);
  for (std::int64_t out : hidden) {
    const double bound = spread / std::sqrt(static_cast<double>(in));
    p.weights.push_back(random(rng, {out, in}, dtype, -bound, bound));
    p.weights.push_back(random(rng, {out}, dtype, -bound, bound));
    in = out;
  }
  return p;
}

// Gaps between segments, a size-1 segment, a segment longer than the CPU chunk (512) and a gap at the end.
std::vector<Segment> mixed_segments() { return {{0, 50}, {64, 1}, {70, 129}, {256, 1200}, {1472, 77}}; }
constexpr std::int64_t kMixedN = 1600;

// The amplifier written out in float64 loops.
std::vector<double> reference(const Problem& p) {
  const std::vector<double> g = values(p.g);
  std::vector<std::vector<double>> w;
  for (const Tensor& t : p.weights) w.push_back(values(t));
  const std::size_t layers = p.weights.size() / 2;
  std::vector<double> out(g.size(), 0.0);
  for (const Segment& s : p.segments) {
    std::vector<double> score(static_cast<std::size_t>(s.size));
    for (std::int64_t i = 0; i < s.size; ++i) {
      std::vector<double> h{g[static_cast<std::size_t>(s.begin + i)]};
      for (std::size_t l = 0; l < layers; ++l) {
        const std::int64_t rows = p.weights[2 * l].size(0), cols = p.weights[2 * l].size(1);
        std::vector<double> z(static_cast<std::size_t>(rows));
        for (std::int64_t r = 0; r < rows; ++r) {
          double acc = w[2 * l + 1][static_cast<std::size_t>(r)];
          for (std::int64_t k = 0; k < cols; ++k) {
            acc += w[2 * l][static_cast<std::size_t>(r * cols + k)] * h[static_cast<std::size_t>(k)];
          }
          z[static_cast<std::size_t>(r)] = l + 1 < layers ? std::max(acc, 0.0) : acc;
        }
        h = z;
      }
      score[static_cast<std::size_t>(i)] = h[0];
    }
    double max = -std::numeric_limits<double>::infinity();
    for (double v : score) max = std::max(max, v);
    double total = 0.0;
    for (double v : score) total += std::exp(v - max);
    double squares = 0.0;
    std::vector<double> q(score.size());
    for (std::size_t i = 0; i < score.size(); ++i) {
      q[i] = std::exp(score[i] - max) / total * g[static_cast<std::size_t>(s.begin) + i];
      squares += q[i] * q[i];
    }
    for (std::size_t i = 0; i < q.size(); ++i) out[static_cast<std::size_t>(s.begin) + i] = p.c * q[i] / std::sqrt(squares);
  }
  return out;
}

struct Result {
  Tensor out;
  TensorList grads;  // d<w, out>/d(g, W0, b0, ...)
};

// Runs the fused op (its MLP evaluated as `path` asks) or the composite on copies of the problem's
// tensors on `device` in `dtype`, with gradients of <proj, out> for a fixed random projection.
Result run(const Problem& p, bool fused, Device device = Device::cpu(), DType dtype = DType::f64,
           MlpPath path = MlpPath::automatic) {
  tape().clear();
  auto leaf = [&](const Tensor& t) { return t.to(dtype).to(device).clone().set_requires_grad(true); };
  Tensor g = leaf(p.g);
  TensorList weights;
  for (const Tensor& t : p.weights) weights.push_back(leaf(t));
  Result r;
  r.out = fused ? neural_amplify(g, weights, p.segments, p.c, path)
                : Amplifier(AmplifierConfig{p.hidden, p.c}).apply_composite(weights, g, p.segments);
  Rng rng(5);
  const Tensor proj = random(rng, {p.g.numel()}, DType::f64).to(dtype).to(device);
  TensorList wrt{g};
  wrt.insert(wrt.end(), weights.begin(), weights.end());
  r.grads = grad({sum(mul(r.out, proj))}, wrt);
  tape().clear();
  return r;
}

// Both ways to evaluate the MLP; on the GPU `automatic` picks the pieces for every MLP in these tests.
constexpr MlpPath kPaths[] = {MlpPath::pieces, MlpPath::direct};
const char* path_name(MlpPath path) { return path == MlpPath::pieces ? "pieces" : "direct"; }

}  // namespace

TEST_CASE("fused amplifier forward matches the formula in float64 loops", "[amplifier]") {
  PoisonGuard poison;  // entries the kernel forgets to write (the gaps) would be NaN
  const std::vector<std::vector<std::int64_t>> hiddens = {{5}, {7, 6}, {4, 9, 3}, {32, 32}};
  for (std::size_t k = 0; k < hiddens.size(); ++k) {
    CAPTURE(hiddens[k]);
    const Problem p = make_problem(10 + k, kMixedN, mixed_segments(), hiddens[k]);
    const Tensor out = neural_amplify(p.g, p.weights, p.segments, p.c);
    const std::vector<double> ref = reference(p);
    CHECK(rel_error(values(out), ref) < 1e-12);
    // Gaps are exactly zero; every segment has norm c.
    const std::vector<double> o = values(out);
    std::int64_t at = 0;
    for (const Segment& s : p.segments) {
      for (std::int64_t i = at; i < s.begin; ++i) CHECK(o[static_cast<std::size_t>(i)] == 0.0);
      double squares = 0.0;
      for (std::int64_t i = s.begin; i < s.begin + s.size; ++i) squares += o[static_cast<std::size_t>(i)] * o[static_cast<std::size_t>(i)];
      CHECK(std::abs(std::sqrt(squares) - p.c) < 1e-12);
      at = s.begin + s.size;
    }
    for (std::int64_t i = at; i < kMixedN; ++i) CHECK(o[static_cast<std::size_t>(i)] == 0.0);
  }
  // The size-1 segment: softmax 1, output c * sign(g).
  const Problem p = make_problem(3, kMixedN, mixed_segments(), {6, 6});
  const double g64 = values(p.g)[64];
  CHECK(values(neural_amplify(p.g, p.weights, p.segments, p.c))[64] == (g64 > 0 ? p.c : -p.c));
}

// On both ways of evaluating the MLP (the op's path argument): the pieces and the direct MLP.
TEST_CASE("fused amplifier matches Amplifier::apply_composite, forward and gradients", "[amplifier]") {
  const std::vector<std::vector<std::int64_t>> hiddens = {{6}, {12, 10}, {5, 7, 4}};
  for (const MlpPath path : kPaths) for (DType dtype : {DType::f64, DType::f32}) {
    const double tol = dtype == DType::f64 ? 1e-12 : 1e-5;
    for (std::size_t k = 0; k < hiddens.size(); ++k) {
      CAPTURE(path_name(path), dtype_name(dtype), hiddens[k]);
      // g of order 1, so that ReLU patterns vary across entries: with tiny g every entry has the same
      // pattern, the bias gradients cancel to ~0 (their sums over a segment are sums of ds, which add
      // up to exactly 0) and only rounding noise would be compared.
      const Problem p = make_problem(40 + k, kMixedN, mixed_segments(), hiddens[k], DType::f64, 1.0);
      const Result fused = run(p, true, Device::cpu(), dtype, path);
      const Result composite = run(p, false, Device::cpu(), dtype);
      CHECK(fused.out.dtype() == dtype);
      CHECK(rel_error(fused.out, composite.out) < tol);
      REQUIRE(fused.grads.size() == composite.grads.size());
      for (std::size_t i = 0; i < fused.grads.size(); ++i) {
        CAPTURE(i);
        CHECK(fused.grads[i].shape() == composite.grads[i].shape());
        const double err = rel_error(fused.grads[i], composite.grads[i]);
        // The last layer's bias has an exactly-zero true gradient (a constant shift of every score
        // cancels in the softmax): both paths give rounding noise there, so compare it absolutely.
        if (i + 1 == fused.grads.size()) {
          CHECK(std::abs(values(fused.grads[i])[0]) < 1e-6);
          CHECK(std::abs(values(composite.grads[i])[0]) < 1e-6);
        } else {
          CHECK(err < tol);
        }
      }
    }
  }
}

TEST_CASE("fused amplifier gradients match float64 finite differences", "[amplifier][gradcheck]") {
  const std::vector<std::vector<std::int64_t>> hiddens = {{4}, {5, 3}, {3, 4, 2}};
  for (std::size_t k = 0; k < hiddens.size(); ++k) {
    CAPTURE(hiddens[k]);
    const Problem p = make_problem(70 + k, 40, {{0, 9}, {12, 1}, {16, 20}}, hiddens[k], DType::f64, 0.5);
    TensorList inputs{p.g};
    inputs.insert(inputs.end(), p.weights.begin(), p.weights.end());
    const auto segments = p.segments;
    const double c = p.c;
    // Every input but the last bias, whose true gradient is exactly 0 (a relative error against
    // finite-difference noise means nothing there; it is checked to be ~0 above).
    std::vector<bool> check(inputs.size(), true);
    check.back() = false;
    const GradCheckResult r = gradcheck(
        [segments, c](const TensorList& xs) {
          return neural_amplify(xs[0], TensorList(xs.begin() + 1, xs.end()), segments, c);
        },
        inputs, check);
    INFO("worst: " << r.worst);
    CHECK(r.max_rel_error < 1e-6);
  }
}

TEST_CASE("a segment whose gradient is all zero stays zero, with zero derivatives and no NaN", "[amplifier]") {
  // A frozen parameter's gradient is exactly zero: c * q / ||q|| would be 0 / 0.
  for (bool fused : {true, false}) {
    CAPTURE(fused);
    Problem p = make_problem(95, 100, {{0, 60}, {64, 36}}, {6, 5});
    Tensor g = p.g.clone();
    for (std::int64_t i = 64; i < 100; ++i) g.data<double>()[i] = 0.0;
    p.g = g;
    const Result r = run(p, fused);
    const std::vector<double> out = values(r.out);
    for (std::int64_t i = 64; i < 100; ++i) CHECK(out[static_cast<std::size_t>(i)] == 0.0);
    for (const Tensor& gr : r.grads) {
      for (double v : values(gr)) REQUIRE(std::isfinite(v));
    }
    double squares = 0.0;
    for (std::int64_t i = 0; i < 60; ++i) squares += out[static_cast<std::size_t>(i)] * out[static_cast<std::size_t>(i)];
    CHECK(std::abs(std::sqrt(squares) - p.c) < 1e-12);  // the other segment is unaffected
  }
}

TEST_CASE("a second derivative through the fused amplifier fails loudly", "[amplifier][second-order]") {
  const Problem p = make_problem(90, 100, {{0, 60}, {64, 36}}, {6, 5});
  tape().clear();
  Tensor g = p.g.clone().set_requires_grad(true);
  TensorList weights;
  for (const Tensor& t : p.weights) weights.push_back(t.clone().set_requires_grad(true));
  const Tensor out = neural_amplify(g, weights, p.segments, p.c);
  CHECK_THROWS_WITH(grad({sum(mul(out, out))}, {weights[0]}, {}, {.create_graph = true}),
                    ContainsSubstring("op 'neural_amplify' has no backward rule") &&
                        ContainsSubstring("apply_composite"));
  tape().clear();
  // First order still works after the failed attempt.
  const Tensor again = neural_amplify(g, weights, p.segments, p.c);
  CHECK_NOTHROW(grad({sum(mul(again, again))}, {weights[0]}));
  tape().clear();
}

TEST_CASE("fused amplifier input errors name the op and the problem", "[amplifier][errors]") {
  const Problem p = make_problem(91, 100, {{0, 60}, {64, 36}}, {6, 5});
  auto call = [&](const Tensor& g, const TensorList& w, const std::vector<Segment>& s) {
    return neural_amplify(g, w, s, p.c);
  };
  const TensorList& w = p.weights;
  // Weights: count, chain of shapes, the last layer, dtype and device.
  CHECK_THROWS_WITH(call(p.g, TensorList(w.begin(), w.begin() + 2), p.segments),
                    ContainsSubstring("neural_amplify") && ContainsSubstring("at least one hidden layer"));
  CHECK_THROWS_WITH(call(p.g, TensorList(w.begin(), w.end() - 1), p.segments), ContainsSubstring("even number"));
  {
    TensorList bad = w;
    bad[0] = Tensor::zeros({6, 2}, DType::f64);
    CHECK_THROWS_WITH(call(p.g, bad, p.segments),
                      ContainsSubstring("neural_amplify: W0 (weights[0]) must be [out, 1]") && ContainsSubstring("[6, 2]"));
  }
  {
    TensorList bad = w;
    bad[2] = Tensor::zeros({5, 7}, DType::f64);
    CHECK_THROWS_WITH(call(p.g, bad, p.segments), ContainsSubstring("W1 (weights[2]) must be [out, 6]"));
  }
  {
    TensorList bad = w;
    bad[3] = Tensor::zeros({4}, DType::f64);
    CHECK_THROWS_WITH(call(p.g, bad, p.segments), ContainsSubstring("b1 (weights[3]) must be [5]"));
  }
  {
    TensorList bad = w;
    bad[4] = Tensor::zeros({2, 5}, DType::f64);
    bad[5] = Tensor::zeros({2}, DType::f64);
    CHECK_THROWS_WITH(call(p.g, bad, p.segments), ContainsSubstring("the last layer has one output"));
  }
  {
    TensorList bad = w;
    bad[1] = bad[1].to(DType::f32);
    CHECK_THROWS_WITH(call(p.g, bad, p.segments), ContainsSubstring("neural_amplify") && ContainsSubstring("f32"));
  }
  // g.
  CHECK_THROWS_WITH(call(reshape(p.g, {10, 10}), w, p.segments), ContainsSubstring("flat buffer"));
  CHECK_THROWS_WITH(neural_amplify(p.g, w, p.segments, std::nan("")), ContainsSubstring("c must be finite"));
  // Segments: empty, overlapping, unsorted, negative, outside the buffer.
  CHECK_THROWS_WITH(call(p.g, w, {{0, 10}, {20, 0}}), ContainsSubstring("segment 1 [20, 20) is empty"));
  CHECK_THROWS_WITH(call(p.g, w, {{0, 10}, {5, 10}}), ContainsSubstring("segment 1 [5, 15) starts before 10"));
  CHECK_THROWS_WITH(call(p.g, w, {{50, 10}, {0, 10}}), ContainsSubstring("sorted"));
  CHECK_THROWS_WITH(call(p.g, w, {{-4, 10}}), ContainsSubstring("segment 0 [-4, 6) starts before 0"));
  CHECK_THROWS_WITH(call(p.g, w, {{90, 11}}), ContainsSubstring("segment 0 [90, 101) lies outside g [100]"));
  // No segments at all: everything is padding.
  const std::vector<double> zeros = values(call(p.g, w, {}));
  CHECK(zeros == std::vector<double>(100, 0.0));
}

TEST_CASE("Amplifier::apply matches the fused op", "[amplifier]") {
  const Problem p = make_problem(92, kMixedN, mixed_segments(), {8, 8});
  const Amplifier amp(AmplifierConfig{p.hidden, p.c});
  tape().clear();
  Tensor g = p.g.clone().set_requires_grad(true);
  const Tensor out = amp.apply(p.weights, g, p.segments);
  CHECK(rel_error(values(out), reference(p)) < 1e-12);
  tape().clear();
}

// Each GPU path against the CPU's direct MLP in float64 (the MLP on every entry, the independent reference).
TEST_CASE("the fused amplifier on the GPU matches the CPU in float64", "[amplifier][cuda]") {
  if (!cuda_is_available()) SKIP("no CUDA GPU: " + cuda_unavailable_reason());
  PoisonGuard poison;
  struct Case {
    std::int64_t n;
    std::vector<Segment> segments;
    std::vector<std::int64_t> hidden;
  };
  const std::vector<Case> cases = {
      {kMixedN, mixed_segments(), {6}},
      {kMixedN, mixed_segments(), {12, 10}},
      {kMixedN, mixed_segments(), {5, 40, 3}},
      {kMixedN, mixed_segments(), {128, 128}},
      {kMixedN, mixed_segments(), {200, 33}},  // wider than one 128-column tile, odd sizes
      // Many segments (more than one launch's worth) of varied sizes.
      {30000, [] {
         std::vector<Segment> s;
         for (std::int64_t k = 0, at = 0; k < 150; ++k) {
           const std::int64_t size = 1 + (k * 37) % 170;
           s.push_back({at, size});
           at += ((size + 63) / 64) * 64;
         }
         return s;
       }(),
       {16, 16}},
  };
  for (const MlpPath path : kPaths) for (std::size_t k = 0; k < cases.size(); ++k) {
    CAPTURE(path_name(path), k, cases[k].hidden);
    const Problem p = make_problem(120 + k, cases[k].n, cases[k].segments, cases[k].hidden, DType::f64, 1.0);
    const Result cpu = run(p, true, Device::cpu(), DType::f64, MlpPath::direct);
    const Result gpu = run(p, true, Device::cuda(0), DType::f32, path);
    CHECK(gpu.out.device() == Device::cuda(0));
    CHECK(rel_error(gpu.out, cpu.out) < 1e-5);
    REQUIRE(gpu.grads.size() == cpu.grads.size());
    CHECK(rel_error(gpu.grads[0], cpu.grads[0]) < 1e-5);  // dg
    // Every weight gradient but the last bias, as one vector, within 1e-5; each tensor within 1e-4
    // (a hidden bias whose gradient nearly cancels over the entries carries float32 noise of
    // ~1e-7 x the sum of its terms, which can exceed 1e-5 of its own small norm).
    std::vector<double> all_gpu, all_cpu;
    for (std::size_t i = 1; i + 1 < gpu.grads.size(); ++i) {
      CAPTURE(i);
      CHECK(rel_error(gpu.grads[i], cpu.grads[i]) < 1e-4);
      const std::vector<double> a = values(gpu.grads[i]), b = values(cpu.grads[i]);
      all_gpu.insert(all_gpu.end(), a.begin(), a.end());
      all_cpu.insert(all_cpu.end(), b.begin(), b.end());
    }
    CHECK(rel_error(all_gpu, all_cpu) < 1e-5);
    CHECK(std::abs(values(gpu.grads.back())[0]) < 1e-4);  // the last bias: true gradient 0
  }
}

// A one-entry segment's output is c sign(g), so every derivative through it is exactly 0; the backward
// gets there only as a difference of two equal terms scaled by c / ||p g||, large for tiny gradients.
// Float arithmetic there left ~0.06 in dg (a simulation of the earlier kernel); double leaves ~1e-10.
TEST_CASE("on the GPU, tiny gradients give a one-entry segment zero derivatives", "[amplifier][cuda]") {
  if (!cuda_is_available()) SKIP("no CUDA GPU: " + cuda_unavailable_reason());
  const Problem p = make_problem(140, kMixedN, mixed_segments(), {128, 128}, DType::f64, 1e-6);
  const Result cpu = run(p, true, Device::cpu(), DType::f64);
  const std::size_t single = 64;  // mixed_segments()'s {64, 1}
  CHECK(std::abs(values(cpu.grads[0])[single]) < 1e-6);
  for (const MlpPath path : kPaths) {
    CAPTURE(path_name(path));
    const Result gpu = run(p, true, Device::cuda(0), DType::f32, path);
    CHECK(std::abs(values(gpu.grads[0])[single]) < 1e-6);
    CHECK(rel_error(gpu.grads[0], cpu.grads[0]) < 1e-5);
  }
}

namespace {
// The fused op (on `device`, on `path`) and the composite on a problem whose gradient has a NaN at
// entry 300 (segment {256, 1200}): every output of that segment must be NaN, every other output finite.
void check_nan_segment(Device device, MlpPath path = MlpPath::automatic) {
  Problem p = make_problem(150, kMixedN, mixed_segments(), {16, 16});
  std::vector<double> g = values(p.g);
  g[300] = std::nan("");
  p.g = Tensor::from_vector(g, {kMixedN});
  for (bool fused : {true, false}) {
    if (!fused && !device.is_cpu()) continue;
    CAPTURE(fused);
    const std::vector<double> out =
        values(run(p, fused, device, fused && !device.is_cpu() ? DType::f32 : DType::f64, path).out);
    for (const Segment& s : p.segments) {
      for (std::int64_t i = s.begin; i < s.begin + s.size; ++i) {
        if (s.begin == 256) REQUIRE(std::isnan(out[static_cast<std::size_t>(i)]));
        else REQUIRE(std::isfinite(out[static_cast<std::size_t>(i)]));
      }
    }
  }
}
}  // namespace

TEST_CASE("a NaN gradient entry makes its whole segment NaN, never zero", "[amplifier]") {
  // The all-zero guard (0 / 0 -> 0) once caught a NaN norm too and silently zeroed the segment.
  check_nan_segment(Device::cpu());
}

TEST_CASE("on the GPU, a NaN gradient entry makes its whole segment NaN", "[amplifier][cuda]") {
  if (!cuda_is_available()) SKIP("no CUDA GPU: " + cuda_unavailable_reason());
  for (const MlpPath path : kPaths) {
    CAPTURE(path_name(path));
    check_nan_segment(Device::cuda(0), path);
  }
}

TEST_CASE("the fused amplifier on the GPU is bit-identical run to run", "[amplifier][cuda][determinism]") {
  if (!cuda_is_available()) SKIP("no CUDA GPU: " + cuda_unavailable_reason());
  const Problem p = make_problem(130, kMixedN, mixed_segments(), {128, 128});
  for (const MlpPath path : kPaths) {
    CAPTURE(path_name(path));
    const Result a = run(p, true, Device::cuda(0), DType::f32, path);
    const Result b = run(p, true, Device::cuda(0), DType::f32, path);
    CHECK(values(a.out) == values(b.out));
    for (std::size_t i = 0; i < a.grads.size(); ++i) CHECK(values(a.grads[i]) == values(b.grads[i]));
  }
}

// At the model's size the entries group into a few hundred pieces, most of them in a handful: the
// per-piece sums run over long runs of the sorted entries, which the small cases above do not reach.
TEST_CASE("on the GPU, the amplifier as pieces matches the CPU at the model's size", "[amplifier][cuda]") {
  if (!cuda_is_available()) SKIP("no CUDA GPU: " + cuda_unavailable_reason());
  const std::int64_t n = 422784;
  const Problem p = make_problem(160, n, {{0, 200000}, {200064, 222720}}, {128, 128}, DType::f64, 1e-3);
  const Result cpu = run(p, true, Device::cpu(), DType::f64, MlpPath::direct);
  const Result gpu = run(p, true, Device::cuda(0), DType::f32, MlpPath::pieces);
  const Result cpu32 = run(p, true, Device::cpu(), DType::f32, MlpPath::pieces);
  CHECK(rel_error(gpu.out, cpu.out) < 1e-5);
  CHECK(rel_error(gpu.grads[0], cpu.grads[0]) < 1e-5);
  auto weight_grads = [](const Result& r) {
    std::vector<double> all;
    for (std::size_t i = 1; i + 1 < r.grads.size(); ++i) {
      const std::vector<double> v = values(r.grads[i]);
      all.insert(all.end(), v.begin(), v.end());
    }
    return all;
  };
  // The weight gradients sum ~400k float32 terms that cancel to small values: in float32 the CPU's
  // own pieces path is ~8e-5 off the float64 result here. The GPU must be as close as that path
  // (with a 1.5x margin for its other summation order), and agree with it to float32 rounding.
  const double cpu32_error = rel_error(weight_grads(cpu32), weight_grads(cpu));
  const double gpu_error = rel_error(weight_grads(gpu), weight_grads(cpu));
  INFO("weight gradients vs float64: GPU " << gpu_error << ", CPU float32 pieces " << cpu32_error);
  CHECK(gpu_error < std::max(1e-5, 1.5 * cpu32_error));
  CHECK(rel_error(weight_grads(gpu), weight_grads(cpu32)) < 1e-6);
}

TEST_CASE("asking the GPU for pieces of an MLP it cannot split names the limit", "[amplifier][cuda]") {
  if (!cuda_is_available()) SKIP("no CUDA GPU: " + cuda_unavailable_reason());
  // (300, 300, 300): 301^3 possible pieces, more than the pieces path takes.
  const Problem p = make_problem(170, 200, {{0, 200}}, {300, 300, 300}, DType::f32);
  CHECK_THROWS_WITH(run(p, true, Device::cuda(0), DType::f32, MlpPath::pieces),
                    ContainsSubstring("cannot run as pieces on the GPU"));
}

