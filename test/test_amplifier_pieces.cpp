// The CPU amplifier's two ways of evaluating the MLP (kernels/cpu/neural_amplify.cpp, MlpPath):
// the exact piecewise-linear form (kernels/cpu/amplifier_pieces.h) against the direct MLP on every
// entry, forward and backward, and each of them against float64 finite differences of its own
// forward. The op-level tests (test_amplifier.cpp) go through the automatic choice.
#include <catch2/catch_test_macros.hpp>

#include <cmath>
#include <limits>
#include <vector>

#include "engine/random.h"
#include "kernels/cpu/amplifier_pieces.h"
#include "kernels/cpu/kernels.h"
#include "support.h"

using namespace tg;
using tgtest::rel_error;
using cpu::MlpPath;

namespace {

// Weights and biases of an MLP 1 -> hidden... -> 1, uniform in +-spread/sqrt(fan_in), in double.
struct Net {
  std::vector<std::vector<double>> w, b;
  std::vector<std::int64_t> in, out;

  Net(Rng& rng, std::vector<std::int64_t> hidden, double spread = 1.5) {
    hidden.push_back(1);
    std::int64_t fan_in = 1;
    for (std::int64_t width : hidden) {
      const double bound = spread / std::sqrt(static_cast<double>(fan_in));
      w.emplace_back(static_cast<std::size_t>(width * fan_in));
      b.emplace_back(static_cast<std::size_t>(width));
      for (double& v : w.back()) v = rng.uniform(-bound, bound);
      for (double& v : b.back()) v = rng.uniform(-bound, bound);
      in.push_back(fan_in);
      out.push_back(width);
      fan_in = width;
    }
  }
  template <class T> cpu::Mlp<T> view(std::vector<std::vector<T>>& wt, std::vector<std::vector<T>>& bt) const {
    cpu::Mlp<T> m;
    for (std::size_t l = 0; l < w.size(); ++l) {
      wt.emplace_back(w[l].begin(), w[l].end());
      bt.emplace_back(b[l].begin(), b[l].end());
    }
    for (std::size_t l = 0; l < w.size(); ++l) {
      m.w.push_back(wt[l].data());
      m.b.push_back(bt[l].data());
    }
    m.in = in;
    m.out = out;
    return m;
  }
};

// Gaps, a one-entry run, runs longer than the direct path's chunk of 512.
const std::vector<cpu::Run> kRuns = {{0, 50}, {64, 1}, {70, 129}, {256, 1200}, {1472, 77}, {1600, 2400}};
constexpr std::int64_t kN = 4100;

// Output, scores and every derivative of <dout, out> for one path, in T.
struct Evaluation {
  std::vector<double> out, scores, dg;
  std::vector<std::vector<double>> dw, db;
};

template <class T>
Evaluation evaluate(const Net& net, const std::vector<double>& g64, const std::vector<double>& dout64, double c,
                       MlpPath path) {
  std::vector<std::vector<T>> wt, bt;
  const cpu::Mlp<T> mlp = net.view<T>(wt, bt);
  const std::vector<T> g(g64.begin(), g64.end()), dout(dout64.begin(), dout64.end());
  const auto n = static_cast<std::int64_t>(g.size());
  std::vector<T> out(g.size()), scores(g.size()), stats(3 * kRuns.size()), dg(g.size());
  cpu::neural_amplify_forward(g.data(), n, mlp, kRuns, c, out.data(), scores.data(), stats.data(), path);
  std::vector<std::vector<T>> dw, db;
  std::vector<T*> dwp, dbp;
  for (std::size_t l = 0; l < net.w.size(); ++l) {
    dw.emplace_back(net.w[l].size());
    db.emplace_back(net.b[l].size());
  }
  for (std::size_t l = 0; l < net.w.size(); ++l) {
    dwp.push_back(dw[l].data());
    dbp.push_back(db[l].data());
  }
  cpu::neural_amplify_backward(dout.data(), g.data(), n, mlp, kRuns, c, scores.data(), stats.data(), dg.data(), dwp,
                               dbp, path);
  Evaluation e;
  e.out.assign(out.begin(), out.end());
  e.dg.assign(dg.begin(), dg.end());
  // Scores only inside the runs (the gaps are never written).
  for (const cpu::Run& r : kRuns) {
    for (std::int64_t i = r.begin; i < r.begin + r.size; ++i) e.scores.push_back(double(scores[static_cast<std::size_t>(i)]));
  }
  for (std::size_t l = 0; l < net.w.size(); ++l) {
    e.dw.emplace_back(dw[l].begin(), dw[l].end());
    e.db.emplace_back(db[l].begin(), db[l].end());
  }
  return e;
}

std::vector<double> uniform_values(Rng& rng, std::int64_t n, double scale) {
  std::vector<double> v(static_cast<std::size_t>(n));
  for (double& x : v) x = rng.uniform(-scale, scale);
  return v;
}

}  // namespace

TEST_CASE("the amplifier MLP has at most (h1 + 1)(h2 + 1) linear pieces, with ascending breakpoints",
          "[amplifier][pieces]") {
  Rng rng(1);
  for (const std::vector<std::int64_t>& hidden : std::vector<std::vector<std::int64_t>>{{9}, {7, 6}, {128, 128}}) {
    CAPTURE(hidden);
    const Net net(rng, hidden);
    std::vector<std::vector<double>> wt, bt;
    const auto pieces = cpu::AmplifierPieces::build(net.view<double>(wt, bt), 1e12);
    REQUIRE(pieces.has_value());
    std::int64_t bound = 1;
    for (std::int64_t h : hidden) bound *= h + 1;
    CHECK(pieces->pieces() >= 2);
    CHECK(pieces->pieces() <= bound);
    // Each piece's own formula at a point inside it equals the direct MLP there (in double).
    const std::vector<double> probe = uniform_values(rng, 2000, 4.0);
    for (double x : probe) {
      std::vector<double> h{x};
      for (std::size_t l = 0; l < net.w.size(); ++l) {
        std::vector<double> z(static_cast<std::size_t>(net.out[l]));
        for (std::int64_t j = 0; j < net.out[l]; ++j) {
          double acc = net.b[l][static_cast<std::size_t>(j)];
          for (std::int64_t k = 0; k < net.in[l]; ++k) acc += net.w[l][static_cast<std::size_t>(j * net.in[l] + k)] * h[static_cast<std::size_t>(k)];
          z[static_cast<std::size_t>(j)] = l + 1 < net.w.size() ? std::max(acc, 0.0) : acc;
        }
        h = z;
      }
      const double s = pieces->score(pieces->piece_of(x), x);
      CHECK(std::abs(s - h[0]) <= 1e-12 * (1.0 + std::abs(h[0])));
    }
  }
  // A budget too small for the pieces gives none (the kernels then run the MLP directly).
  const Net net(rng, {128, 128});
  std::vector<std::vector<double>> wt, bt;
  const cpu::Mlp<double> mlp = net.view<double>(wt, bt);
  CHECK_FALSE(cpu::AmplifierPieces::build(mlp, 1e5).has_value());
  // The automatic choice: the pieces for the default model's 422,784 gradient entries, the direct MLP
  // for a handful of entries; the forced paths regardless.
  using cpu::AmplifierPieces;
  CHECK(AmplifierPieces::for_path(mlp, {{0, 422784}}, MlpPath::automatic) != nullptr);
  CHECK(AmplifierPieces::for_path(mlp, {{0, 3}}, MlpPath::automatic) == nullptr);
  CHECK(AmplifierPieces::for_path(mlp, {{0, 3}}, MlpPath::pieces) != nullptr);
  CHECK(AmplifierPieces::for_path(mlp, {{0, 422784}}, MlpPath::direct) == nullptr);
}

TEST_CASE("the amplifier's pieces are reused while its weights are unchanged and rebuilt when one changes",
          "[amplifier][pieces]") {
  Rng rng(4);
  const Net net(rng, {16, 16});
  std::vector<std::vector<float>> wt, bt;
  const cpu::Mlp<float> mlp = net.view<float>(wt, bt);
  using cpu::AmplifierPieces;
  const auto first = AmplifierPieces::for_path(mlp, {{0, 100}}, MlpPath::pieces);
  REQUIRE(first != nullptr);
  CHECK(AmplifierPieces::for_path(mlp, {{0, 100}}, MlpPath::pieces) == first);
  // Cached, but too costly for 3 entries: the automatic path still runs the MLP directly.
  CHECK(AmplifierPieces::for_path(mlp, {{0, 3}}, MlpPath::automatic) == nullptr);
  // One weight changed in place (as an optimizer step does): new pieces, matching the direct MLP.
  wt[1][5] += 0.25f;
  const auto second = AmplifierPieces::for_path(mlp, {{0, 100}}, MlpPath::pieces);
  REQUIRE(second != nullptr);
  CHECK(second != first);
  for (double probe : uniform_values(rng, 200, 3.0)) {
    const double x = static_cast<float>(probe);
    std::vector<double> h{x};
    for (std::size_t l = 0; l < wt.size(); ++l) {
      std::vector<double> z(static_cast<std::size_t>(net.out[l]));
      for (std::int64_t j = 0; j < net.out[l]; ++j) {
        double acc = bt[l][static_cast<std::size_t>(j)];
        for (std::int64_t k = 0; k < net.in[l]; ++k) {
          acc += double(wt[l][static_cast<std::size_t>(j * net.in[l] + k)]) * h[static_cast<std::size_t>(k)];
        }
        z[static_cast<std::size_t>(j)] = l + 1 < wt.size() ? std::max(acc, 0.0) : acc;
      }
      h = z;
    }
    CHECK(std::abs(second->score(second->piece_of(x), x) - h[0]) <= 1e-12 * (1.0 + std::abs(h[0])));
  }
}

TEST_CASE("the amplifier's pieces and the direct MLP give the same outputs and gradients", "[amplifier][pieces]") {
  Rng rng(2);
  const std::vector<std::vector<std::int64_t>> hiddens = {{5}, {7, 6}, {4, 9, 3}, {32, 32}, {128, 128}};
  for (std::size_t k = 0; k < hiddens.size(); ++k) {
    // Gradient scales: tiny (every entry in the few pieces around 0), of order 1, and wide.
    for (double scale : {1e-4, 1.0, 30.0}) {
      CAPTURE(hiddens[k], scale);
      const Net net(rng, hiddens[k]);
      std::vector<double> g = uniform_values(rng, kN, scale);
      for (std::size_t i = 0; i < g.size(); i += 37) g[i] = 0.0;  // exact zeros, as for unused rows
      const std::vector<double> dout = uniform_values(rng, kN, 1.0);
      const double c = 0.7;

      const auto direct = evaluate<double>(net, g, dout, c, MlpPath::direct);
      const auto pieces = evaluate<double>(net, g, dout, c, MlpPath::pieces);
      CHECK(rel_error(pieces.scores, direct.scores) < 1e-12);
      CHECK(rel_error(pieces.out, direct.out) < 1e-12);
      CHECK(rel_error(pieces.dg, direct.dg) < 1e-10);
      // Biases are compared as part of the whole weight gradient: a bias gradient is a sum of ds over
      // entries sharing the unit's state, and ds sums to exactly 0 over a run, so where (tiny g) every
      // entry has the same states its true value is 0 and both paths give rounding noise.
      std::vector<double> all_pieces, all_direct;
      for (std::size_t l = 0; l < net.w.size(); ++l) {
        CAPTURE(l);
        CHECK(rel_error(pieces.dw[l], direct.dw[l]) < 1e-10);
        all_pieces.insert(all_pieces.end(), pieces.dw[l].begin(), pieces.dw[l].end());
        all_pieces.insert(all_pieces.end(), pieces.db[l].begin(), pieces.db[l].end());
        all_direct.insert(all_direct.end(), direct.dw[l].begin(), direct.dw[l].end());
        all_direct.insert(all_direct.end(), direct.db[l].begin(), direct.db[l].end());
      }
      CHECK(rel_error(all_pieces, all_direct) < 1e-10);
      CHECK(std::abs(pieces.db.back()[0]) < 1e-10);  // the last bias: a shift of every score cancels

      // In float32 the two paths differ by float rounding only (the pieces work in double).
      const auto direct32 = evaluate<float>(net, g, dout, c, MlpPath::direct);
      const auto pieces32 = evaluate<float>(net, g, dout, c, MlpPath::pieces);
      CHECK(rel_error(pieces32.out, direct.out) < 1e-6);
      CHECK(rel_error(direct32.out, direct.out) < 1e-4);
      CHECK(rel_error(pieces32.dg, direct.dg) < 1e-5);
      CHECK(rel_error(pieces32.dw[0], direct.dw[0]) < 1e-5);
    }
  }
}

TEST_CASE("both amplifier paths' gradients match float64 finite differences of their own forward",
          "[amplifier][pieces][gradcheck]") {
  // loss = <dout, out(g, phi)>; central differences in g (a few entries) and in every weight.
  Rng rng(3);
  for (MlpPath path : {MlpPath::direct, MlpPath::pieces}) {
    for (const std::vector<std::int64_t>& hidden : std::vector<std::vector<std::int64_t>>{{6}, {5, 4}, {3, 4, 3}}) {
      CAPTURE(path == MlpPath::direct ? "direct" : "pieces", hidden);
      Net net(rng, hidden);
      std::vector<double> g = uniform_values(rng, kN, 2.0);
      const std::vector<double> dout = uniform_values(rng, kN, 1.0);
      const double c = 0.7, step = 1e-6;
      const auto analytic = evaluate<double>(net, g, dout, c, path);
      auto loss = [&](const Net& at_net, const std::vector<double>& at_g) {
        const auto e = evaluate<double>(at_net, at_g, dout, c, path);
        double s = 0;
        for (std::size_t i = 0; i < dout.size(); ++i) s += dout[i] * e.out[i];
        return s;
      };
      std::vector<double> numeric, ours;
      for (std::size_t i : {0u, 65u, 300u, 1500u, 2000u}) {  // entries in different runs
        std::vector<double> up = g, down = g;
        up[i] += step;
        down[i] -= step;
        numeric.push_back((loss(net, up) - loss(net, down)) / (2 * step));
        ours.push_back(analytic.dg[i]);
      }
      for (std::size_t l = 0; l < net.w.size(); ++l) {
        for (std::size_t i = 0; i < net.w[l].size(); ++i) {
          Net up = net, down = net;
          up.w[l][i] += step;
          down.w[l][i] -= step;
          numeric.push_back((loss(up, g) - loss(down, g)) / (2 * step));
          ours.push_back(analytic.dw[l][i]);
        }
        for (std::size_t i = 0; l + 1 < net.w.size() && i < net.b[l].size(); ++i) {
          Net up = net, down = net;
          up.b[l][i] += step;
          down.b[l][i] -= step;
          numeric.push_back((loss(up, g) - loss(down, g)) / (2 * step));
          ours.push_back(analytic.db[l][i]);
        }
      }
      CHECK(rel_error(ours, numeric) < 1e-6);
    }
  }
}

TEST_CASE("a NaN or infinite gradient entry gives a non-finite output on both amplifier paths",
          "[amplifier][pieces]") {
  // Never a silently finite output: the trainer's finite checks then name the divergence. (A NaN makes
  // the whole segment NaN; an infinite entry gives NaN there and may leave its neighbours at 0.)
  Rng rng(4);
  const Net net(rng, {16, 16});
  const std::vector<double> dout = uniform_values(rng, kN, 1.0);
  for (double bad : {std::nan(""), std::numeric_limits<double>::infinity(), -std::numeric_limits<double>::infinity()}) {
    for (MlpPath path : {MlpPath::direct, MlpPath::pieces}) {
      CAPTURE(bad, path == MlpPath::direct ? "direct" : "pieces");
      std::vector<double> g = uniform_values(rng, kN, 1e-3);
      g[300] = bad;  // in run {256, 1200}
      const auto e = evaluate<double>(net, g, dout, 0.7, path);
      for (const cpu::Run& r : kRuns) {
        const bool hit = r.begin <= 300 && 300 < r.begin + r.size;
        for (std::int64_t i = r.begin; i < r.begin + r.size; ++i) {
          const bool finite = std::isfinite(e.out[static_cast<std::size_t>(i)]);
          if (!hit) REQUIRE(finite);
          else if (i == 300 || std::isnan(bad)) REQUIRE_FALSE(finite);
        }
      }
    }
  }
}
