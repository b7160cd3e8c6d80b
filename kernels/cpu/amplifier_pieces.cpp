// The amplifier MLP as pieces (amplifier_pieces.h): building them, finding an entry's piece, and the
// weight gradients from per-piece sums.
#include "kernels/cpu/amplifier_pieces.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <mutex>

namespace tg::cpu {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// A point strictly inside (lo, hi] away from both ends, where every unit's on/off state is that of
// the whole interval (no crossing lies inside it).
double inside(double lo, double hi) {
  if (std::isinf(lo) && std::isinf(hi)) return 0.0;
  if (std::isinf(lo)) return hi - std::max(1.0, std::abs(hi));
  if (std::isinf(hi)) return lo + std::max(1.0, std::abs(lo));
  return lo + (hi - lo) / 2;
}

}  // namespace

template <class T>
double AmplifierPieces::direct_work_per_entry(const Mlp<T>& mlp) {
  double work = 0;
  for (std::size_t l = 0; l < mlp.w.size(); ++l) work += double(mlp.in[l]) * double(mlp.out[l]);
  return work;
}

void AmplifierPieces::layer_input(std::size_t l, std::int64_t q, std::vector<double>& a_in,
                                  std::vector<double>& b_in) const {
  const std::int64_t in = in_[l];
  a_in.assign(static_cast<std::size_t>(in), 0.0);
  b_in.assign(static_cast<std::size_t>(in), 0.0);
  if (l == 0) {
    a_in[0] = 1.0;
    return;
  }
  const Level& level = levels_[l];
  const Level& below = levels_[l - 1];
  const std::int64_t parent = level.parent[static_cast<std::size_t>(q)];
  for (std::int64_t k = 0; k < in; ++k) {
    if (level.on[static_cast<std::size_t>(q * in + k)] == 0) continue;
    a_in[static_cast<std::size_t>(k)] = below.a[static_cast<std::size_t>(parent * in + k)];
    b_in[static_cast<std::size_t>(k)] = below.b[static_cast<std::size_t>(parent * in + k)];
  }
}

template <class T>
std::shared_ptr<const AmplifierPieces> AmplifierPieces::for_path(const Mlp<T>& mlp, const std::vector<Run>& runs,
                                                                 MlpPath path) {
  if (path == MlpPath::direct) return nullptr;
  double entries = 0;
  for (const Run& r : runs) entries += double(r.size);
  // The build's multiply-adds are scalar loops in double, the direct MLP's mostly OpenBLAS GEMMs in
  // float, which run an order of magnitude faster each: the pieces must be 16x cheaper in count.
  const double budget = path == MlpPath::pieces ? kInf : direct_work_per_entry(mlp) * entries / 16;
  static std::mutex mutex;
  static std::shared_ptr<const AmplifierPieces> last;
  {
    const std::lock_guard lock(mutex);
    if (last != nullptr && last->work_ <= budget && last->built_from(mlp)) return last;
  }
  std::optional<AmplifierPieces> built = build(mlp, budget);
  if (!built) return nullptr;
  auto shared = std::make_shared<const AmplifierPieces>(std::move(*built));
  const std::lock_guard lock(mutex);
  last = shared;
  return shared;
}

template <class T>
bool AmplifierPieces::built_from(const Mlp<T>& mlp) const {
  if (mlp.w.size() != w_.size()) return false;
  for (std::size_t l = 0; l < w_.size(); ++l) {
    if (mlp.in[l] != in_[l] || mlp.out[l] != out_[l]) return false;
    // == on doubles: a NaN weight never matches, so such pieces are rebuilt (and stay NaN).
    for (std::size_t i = 0; i < w_[l].size(); ++i) {
      if (double(mlp.w[l][i]) != w_[l][i]) return false;
    }
    for (std::size_t i = 0; i < b_[l].size(); ++i) {
      if (double(mlp.b[l][i]) != b_[l][i]) return false;
    }
  }
  return true;
}

template <class T>
std::optional<AmplifierPieces> AmplifierPieces::build(const Mlp<T>& mlp, double max_work) {
  AmplifierPieces p;
  const std::size_t layers = mlp.w.size();
  for (std::size_t l = 0; l < layers; ++l) {
    p.in_.push_back(mlp.in[l]);
    p.out_.push_back(mlp.out[l]);
    p.w_.emplace_back(mlp.w[l], mlp.w[l] + mlp.in[l] * mlp.out[l]);
    p.b_.emplace_back(mlp.b[l], mlp.b[l] + mlp.out[l]);
  }
  // Per piece and layer the backward does about as much as the forward (weight gradients, and the
  // gradients passed to the layer below), so every multiply-add of the build counts twice.
  double work = 0;
  p.levels_.emplace_back();
  p.levels_[0].parent = {-1};
  std::vector<double> lo{-kInf}, hi{kInf};  // the current level's intervals (lo, hi]

  for (std::size_t l = 0; l + 1 < layers; ++l) {
    const std::int64_t in = p.in_[l], out = p.out_[l], count = p.levels_[l].count();
    work += 2.0 * double(count) * double(in) * double(out);
    if (work > max_work) return std::nullopt;

    // Layer l's pre-activations on each interval: z = W (a_in g + b_in) + b, where (a_in, b_in) is
    // the layer's input there (level 0: the input g itself, a_in = 1, b_in = 0).
    Level& level = p.levels_[l];
    level.a.assign(static_cast<std::size_t>(count * out), 0.0);
    level.b.assign(static_cast<std::size_t>(count * out), 0.0);
    std::vector<double> a_in, b_in;
    for (std::int64_t q = 0; q < count; ++q) {
      p.layer_input(l, q, a_in, b_in);
      const double* w = p.w_[l].data();
      for (std::int64_t j = 0; j < out; ++j) {
        double za = 0.0, zb = p.b_[l][static_cast<std::size_t>(j)];
        for (std::int64_t k = 0; k < in; ++k) {
          za += w[j * in + k] * a_in[static_cast<std::size_t>(k)];
          zb += w[j * in + k] * b_in[static_cast<std::size_t>(k)];
        }
        level.a[static_cast<std::size_t>(q * out + j)] = za;
        level.b[static_cast<std::size_t>(q * out + j)] = zb;
      }
    }

    // Split every interval at its units' zero crossings -b/a that lie strictly inside it. (a = 0 gives
    // +-inf or NaN, which no comparison keeps.)
    std::vector<std::vector<double>> cuts(static_cast<std::size_t>(count));
    std::int64_t next_count = 0;
    for (std::int64_t q = 0; q < count; ++q) {
      std::vector<double>& c = cuts[static_cast<std::size_t>(q)];
      for (std::int64_t j = 0; j < out; ++j) {
        const double t = -level.b[static_cast<std::size_t>(q * out + j)] / level.a[static_cast<std::size_t>(q * out + j)];
        if (lo[static_cast<std::size_t>(q)] < t && t < hi[static_cast<std::size_t>(q)]) c.push_back(t);
      }
      std::sort(c.begin(), c.end());
      c.erase(std::unique(c.begin(), c.end()), c.end());
      next_count += static_cast<std::int64_t>(c.size()) + 1;
    }
    // The next layer's cost on the new intervals (the last layer: one dot product of each channel).
    const bool next_is_last = l + 2 == layers;
    work += next_is_last ? 3.0 * double(next_count) * double(out)
                         : 2.0 * double(next_count) * double(out) * double(p.out_[l + 1]);
    if (work > max_work) return std::nullopt;

    Level next;
    next.parent.reserve(static_cast<std::size_t>(next_count));
    next.on.reserve(static_cast<std::size_t>(next_count * out));
    std::vector<double> next_lo, next_hi;
    for (std::int64_t q = 0; q < count; ++q) {
      const std::vector<double>& c = cuts[static_cast<std::size_t>(q)];
      for (std::size_t s = 0; s <= c.size(); ++s) {
        const double a = s == 0 ? lo[static_cast<std::size_t>(q)] : c[s - 1];
        const double b = s == c.size() ? hi[static_cast<std::size_t>(q)] : c[s];
        const double x = inside(a, b);
        next.parent.push_back(static_cast<std::int32_t>(q));
        for (std::int64_t j = 0; j < out; ++j) {
          const double z = level.a[static_cast<std::size_t>(q * out + j)] * x + level.b[static_cast<std::size_t>(q * out + j)];
          next.on.push_back(z > 0.0 ? 1 : 0);
        }
        next_lo.push_back(a);
        next_hi.push_back(b);
      }
    }
    p.levels_.push_back(std::move(next));
    lo = std::move(next_lo);
    hi = std::move(next_hi);
  }

  // The last layer (one output): slope and intercept of every piece.
  const std::size_t last = layers - 1;
  const std::int64_t in = p.in_[last], count = p.levels_[last].count();
  p.slope_.resize(static_cast<std::size_t>(count));
  p.intercept_.resize(static_cast<std::size_t>(count));
  std::vector<double> a_in, b_in;
  for (std::int64_t q = 0; q < count; ++q) {
    p.layer_input(last, q, a_in, b_in);
    double sa = 0.0, sb = p.b_[last][0];
    for (std::int64_t k = 0; k < in; ++k) {
      sa += p.w_[last][static_cast<std::size_t>(k)] * a_in[static_cast<std::size_t>(k)];
      sb += p.w_[last][static_cast<std::size_t>(k)] * b_in[static_cast<std::size_t>(k)];
    }
    p.slope_[static_cast<std::size_t>(q)] = sa;
    p.intercept_[static_cast<std::size_t>(q)] = sb;
  }
  p.upper_.assign(hi.begin(), hi.end() - 1);
  p.work_ = work;
  return p;
}

std::int64_t AmplifierPieces::piece_of(double g) const {
  // lower_bound without branches: the answer stays in [base, base + len].
  const double* data = upper_.data();
  std::size_t len = upper_.size();
  if (len == 0) return 0;
  const double* base = data;
  while (len > 1) {
    const std::size_t half = len / 2;
    base += base[half - 1] < g ? half : 0;
    len -= half;
  }
  return static_cast<std::int64_t>(base - data) + (*base < g ? 1 : 0);
}

void AmplifierPieces::weight_gradients(const std::vector<double>& s0, const std::vector<double>& s1,
                                       std::vector<std::vector<double>>& dw,
                                       std::vector<std::vector<double>>& db) const {
  const std::size_t layers = w_.size();
  dw.assign(layers, {});
  db.assign(layers, {});
  for (std::size_t l = 0; l < layers; ++l) {
    dw[l].assign(static_cast<std::size_t>(in_[l] * out_[l]), 0.0);
    db[l].assign(static_cast<std::size_t>(out_[l]), 0.0);
  }

  // The last layer: each piece's input is its parent's pre-activations with the off units zeroed.
  // (da, dc) collect the gradients of the level below's pre-activations, channel by channel.
  const std::size_t last = layers - 1;
  const Level& pieces = levels_[last];
  std::int64_t in = in_[last];
  std::vector<double> da(static_cast<std::size_t>(levels_[last - 1].count() * in), 0.0), dc(da.size(), 0.0);
  std::vector<double> a_in, b_in;
  {
    const double* w = w_[last].data();
    for (std::int64_t q = 0; q < pieces.count(); ++q) {
      layer_input(last, q, a_in, b_in);
      const std::int64_t parent = pieces.parent[static_cast<std::size_t>(q)];
      const double g1 = s1[static_cast<std::size_t>(q)], g0 = s0[static_cast<std::size_t>(q)];
      db[last][0] += g0;
      for (std::int64_t k = 0; k < in; ++k) {
        if (pieces.on[static_cast<std::size_t>(q * in + k)] == 0) continue;
        const std::size_t at = static_cast<std::size_t>(parent * in + k);
        dw[last][static_cast<std::size_t>(k)] += g1 * a_in[static_cast<std::size_t>(k)] + g0 * b_in[static_cast<std::size_t>(k)];
        da[at] += w[k] * g1;
        dc[at] += w[k] * g0;
      }
    }
  }

  // Hidden layers, last to first: level l's intervals hold layer l's pre-activation gradients.
  for (std::size_t l = last; l-- > 0;) {
    const Level& level = levels_[l];
    in = in_[l];
    const std::int64_t out = out_[l];
    const double* w = w_[l].data();
    std::vector<double> below_da, below_dc;
    if (l > 0) {
      below_da.assign(static_cast<std::size_t>(levels_[l - 1].count() * in), 0.0);
      below_dc.assign(below_da.size(), 0.0);
    }
    for (std::int64_t q = 0; q < level.count(); ++q) {
      const std::int64_t parent = level.parent[static_cast<std::size_t>(q)];
      layer_input(l, q, a_in, b_in);
      for (std::int64_t j = 0; j < out; ++j) {
        const double ga = da[static_cast<std::size_t>(q * out + j)], gc = dc[static_cast<std::size_t>(q * out + j)];
        db[l][static_cast<std::size_t>(j)] += gc;
        double* row = dw[l].data() + j * in;
        for (std::int64_t k = 0; k < in; ++k) row[k] += ga * a_in[static_cast<std::size_t>(k)] + gc * b_in[static_cast<std::size_t>(k)];
      }
      if (l == 0) continue;
      // Back to the input's channels, through the on units only.
      for (std::int64_t k = 0; k < in; ++k) {
        if (level.on[static_cast<std::size_t>(q * in + k)] == 0) continue;
        double ta = 0.0, tc = 0.0;
        for (std::int64_t j = 0; j < out; ++j) {
          ta += w[j * in + k] * da[static_cast<std::size_t>(q * out + j)];
          tc += w[j * in + k] * dc[static_cast<std::size_t>(q * out + j)];
        }
        below_da[static_cast<std::size_t>(parent * in + k)] += ta;
        below_dc[static_cast<std::size_t>(parent * in + k)] += tc;
      }
    }
    da = std::move(below_da);
    dc = std::move(below_dc);
  }
}

template std::optional<AmplifierPieces> AmplifierPieces::build<float>(const Mlp<float>&, double);
template std::optional<AmplifierPieces> AmplifierPieces::build<double>(const Mlp<double>&, double);
template double AmplifierPieces::direct_work_per_entry<float>(const Mlp<float>&);
template double AmplifierPieces::direct_work_per_entry<double>(const Mlp<double>&);
template std::shared_ptr<const AmplifierPieces> AmplifierPieces::for_path<float>(const Mlp<float>&,
                                                                                 const std::vector<Run>&, MlpPath);
template std::shared_ptr<const AmplifierPieces> AmplifierPieces::for_path<double>(const Mlp<double>&,
                                                                                  const std::vector<Run>&, MlpPath);

}  // namespace tg::cpu
