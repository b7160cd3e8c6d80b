// NeuralGrok's gradient amplifier on the CPU (MethodKernels::neural_amplify_forward / _backward).
//
// Two ways to get the MLP's scores and their derivatives (MlpPath):
//  - pieces (the default whenever it is cheaper, as it is for the model's ~423k entries): the MLP is
//    a piecewise-linear function of its scalar input, built once per call (amplifier_pieces.h); an
//    entry costs a binary search and a multiply-add, and the weight gradients come from per-piece
//    sums of ds and ds * g.
//  - direct, below: the MLP on every entry. It is the fallback when the pieces would cost more (a
//    deep and wide MLP, or few entries) and the reference the pieces are tested against.
//
// The direct MLP runs on chunks of kChunk consecutive entries of one run (a parameter tensor), so a
// chunk's activations ([kChunk, h] per layer, 256 KiB for h = 128 in f32) stay in the L2 cache: the
// first layer (input width 1) and the last (output width 1) are plain loops, every hidden x hidden
// layer is one OpenBLAS GEMM on the chunk's activation matrix. Softmax statistics, norms and dot
// products over a run accumulate in double.
//
// The backward recomputes the hidden activations chunk by chunk (they are never stored for all N
// entries). Weight gradients: each chunk's contribution (a GEMM into a scratch matrix for the hidden
// x hidden layers, loops for the first and last) is added into double accumulators, chunk after
// chunk in buffer order. The chunking depends only on the runs, so the result does not depend on
// the thread count beyond OpenBLAS's own (deterministic for a fixed thread count).
//
// Backward math for one run, with u = q / ||q|| (= out / c) and dout the output's cotangent:
//   A = sum_j dout_j u_j;  dq_i = (c / ||q||) (dout_i - u_i A);  dg_i (outside the MLP) = dq_i p_i;
//   dp_i = dq_i g_i;       ds_i = p_i (dp_i - sum_j p_j dp_j) = p_i dp_i = q_i dq_i.
// The softmax term vanishes identically: sum_j p_j dp_j = sum_j q_j dq_j = c A - c A sum_j u_j^2 = 0
// (the output does not change when a constant is added to every score), so it is not computed.
// Then ds goes back through the MLP: dW, db of every layer and dg_i (mlp) = ds_i dmlp/dg_i.
#include <algorithm>
#include <cmath>
#include <optional>
#include <vector>

#include "kernels/cpu/amplifier_pieces.h"
#include "kernels/cpu/kernels.h"
#include "kernels/cpu/parallel.h"

namespace tg::cpu {

namespace {

constexpr std::int64_t kChunk = 512;

template <class T>
std::int64_t widest_hidden(const Mlp<T>& mlp) {
  std::int64_t width = 1;
  for (std::size_t l = 0; l + 1 < mlp.w.size(); ++l) width = std::max(width, mlp.out[l]);
  return width;
}

// The hidden activations (after ReLU) of e entries x[0, e): act[l] is [e, out[l]] for the hidden
// layers l = 0 .. L-2. act[l] and act[l - 1] must differ (act[l] and act[l - 2] may be the same buffer).
template <class T>
void hidden_forward(const T* x, std::int64_t e, const Mlp<T>& mlp, T* const* act) {
  const std::size_t layers = mlp.w.size();
  {
    const std::int64_t h = mlp.out[0];
    const T* w = mlp.w[0];
    const T* b = mlp.b[0];
    for (std::int64_t r = 0; r < e; ++r) {
      const T xr = x[r];
      T* row = act[0] + r * h;
      for (std::int64_t j = 0; j < h; ++j) {
        const T z = w[j] * xr + b[j];
        row[j] = z > T(0) ? z : T(0);
      }
    }
  }
  for (std::size_t l = 1; l + 1 < layers; ++l) {
    const std::int64_t in = mlp.in[l], out = mlp.out[l];
    T* a = act[l];
    for (std::int64_t r = 0; r < e; ++r) std::copy(mlp.b[l], mlp.b[l] + out, a + r * out);
    gemm(act[l - 1], mlp.w[l], a, 1, e, out, in, false, true, T(1), T(1));  // a = b + act W^T
    for (std::int64_t i = 0; i < e * out; ++i) a[i] = a[i] > T(0) ? a[i] : T(0);
  }
}

// scores[r] = b + sum_j w[j] act[r, j] (the last layer, one output), accumulated in double.
template <class T>
void last_layer(const T* act, std::int64_t e, const Mlp<T>& mlp, T* scores) {
  const std::size_t last = mlp.w.size() - 1;
  const std::int64_t h = mlp.in[last];
  const T* w = mlp.w[last];
  const double b = mlp.b[last][0];
  for (std::int64_t r = 0; r < e; ++r) {
    const T* row = act + r * h;
    double s = 0.0;
    for (std::int64_t j = 0; j < h; ++j) s += double(w[j]) * double(row[j]);
    scores[r] = static_cast<T>(s + b);
  }
}

// One run's softmax probability of entry i: exp(s_i - max) / sum.
inline double probability(double score, double max, double total) { return std::exp(score - max) / total; }

// The backward's per-run constants (see the header comment): 1/||q|| and A = sum_j dout_j u_j, from
// the run's softmax probabilities p; then, per entry, ds_i = q_i dq_i and dg_i outside the MLP, p_i dq_i.
struct RunBackward {
  double inv_norm = 0, a = 0, coef = 0;

  template <class T>
  RunBackward(const T* dy, const T* g, const double* p, std::int64_t size, const T* stats, double c)
      : inv_norm(stats[2] != 0 ? 1.0 / double(stats[2]) : 0.0) {
    // inv_norm 0 for an all-zero gradient: zero output, zero derivatives.
    for (std::int64_t i = 0; i < size; ++i) a += double(dy[i]) * p[i] * double(g[i]) * inv_norm;
    coef = c * inv_norm;
  }
  // (ds_i, dg_i outside the MLP) of one entry with cotangent dy, input g and probability p.
  void entry(double dy, double g, double p, double& ds, double& dg_outside) const {
    const double q = p * g;
    const double dq = coef * (dy - q * inv_norm * a);
    ds = q * dq;
    dg_outside = dq * p;
  }
};

// One run's softmax probabilities p_i from its scores and forward statistics (max, total), on the pool.
template <class T>
void run_probabilities(const T* s, std::int64_t size, const T* stats, double* p) {
  const double max = stats[0], total = stats[1];
  parallel_for(size, grain_for(20), [&](std::int64_t i0, std::int64_t i1) {
    for (std::int64_t i = i0; i < i1; ++i) p[i] = probability(s[i], max, total);
  });
}

}  // namespace

template <class T>
void neural_amplify_forward(const T* g, std::int64_t n, const Mlp<T>& mlp, const std::vector<Run>& runs, double c,
                            T* out, T* scores, T* stats, MlpPath path) {
  std::fill(out, out + n, T(0));
  const std::shared_ptr<const AmplifierPieces> pieces = AmplifierPieces::for_path(mlp, runs, path);
  const std::size_t layers = mlp.w.size();
  const std::int64_t width = pieces ? 0 : widest_hidden(mlp);
  std::vector<T> buffers(static_cast<std::size_t>(2 * kChunk * width));
  std::vector<T*> act(layers - 1);
  for (std::size_t l = 0; l + 1 < layers; ++l) act[l] = buffers.data() + static_cast<std::int64_t>(l % 2) * kChunk * width;

  std::int64_t longest = 0;
  for (const Run& r : runs) longest = std::max(longest, r.size);
  std::vector<double> exps(static_cast<std::size_t>(longest));  // one run's exp(s_i - max)

  // The per-entry passes (scores, exponentials, outputs) run on the thread pool; the sums over a run
  // stay sequential in entry order, so the result is the same for any thread count.
  for (std::size_t k = 0; k < runs.size(); ++k) {
    const std::int64_t begin = runs[k].begin, size = runs[k].size;
    const T* gr = g + begin;
    T* s = scores + begin;
    if (pieces) {
      // A binary search over the pieces per entry (~14 steps for (128, 128)).
      parallel_for(size, grain_for(64), [&](std::int64_t i0, std::int64_t i1) {
        for (std::int64_t i = i0; i < i1; ++i) {
          const double x = gr[i];
          s[i] = static_cast<T>(pieces->score(pieces->piece_of(x), x));
        }
      });
    } else {
      for (std::int64_t at = 0; at < size; at += kChunk) {
        const std::int64_t e = std::min(kChunk, size - at);
        hidden_forward(gr + at, e, mlp, act.data());
        last_layer(act[layers - 2], e, mlp, s + at);
      }
    }
    T max = s[0];
    for (std::int64_t i = 1; i < size; ++i) max = s[i] > max ? s[i] : max;
    parallel_for(size, grain_for(20), [&](std::int64_t i0, std::int64_t i1) {
      for (std::int64_t i = i0; i < i1; ++i) exps[static_cast<std::size_t>(i)] = std::exp(double(s[i]) - double(max));
    });
    double total = 0.0;
    for (std::int64_t i = 0; i < size; ++i) total += exps[static_cast<std::size_t>(i)];
    // q_i = p_i g_i with p_i = e_i / total, the softmax probability (as probability() computes it).
    double squares = 0.0;
    for (std::int64_t i = 0; i < size; ++i) {
      const double q = exps[static_cast<std::size_t>(i)] / total * double(gr[i]);
      squares += q * q;
    }
    const double norm = std::sqrt(squares);
    T* o = out + begin;
    parallel_for(size, grain_for(4), [&](std::int64_t i0, std::int64_t i1) {
      for (std::int64_t i = i0; i < i1; ++i) {
        const double q = exps[static_cast<std::size_t>(i)] / total * double(gr[i]);
        // An all-zero gradient stays zero; a NaN anywhere in the segment (NaN norm) makes all of it NaN.
        o[i] = norm != 0.0 ? static_cast<T>(c * q / norm) : T(0);
      }
    });
    stats[3 * k] = max;
    stats[3 * k + 1] = static_cast<T>(total);
    stats[3 * k + 2] = static_cast<T>(norm);
  }
}

template <class T>
void neural_amplify_backward(const T* dout, const T* g, std::int64_t n, const Mlp<T>& mlp, const std::vector<Run>& runs,
                             double c, const T* scores, const T* stats, T* dg, const std::vector<T*>& dw,
                             const std::vector<T*>& db, MlpPath path) {
  std::fill(dg, dg + n, T(0));
  const std::size_t layers = mlp.w.size();
  auto write_weight_gradients = [&](const std::vector<std::vector<double>>& acc_w,
                                    const std::vector<std::vector<double>>& acc_b) {
    for (std::size_t l = 0; l < layers; ++l) {
      for (std::size_t i = 0; i < acc_w[l].size(); ++i) dw[l][i] = static_cast<T>(acc_w[l][i]);
      for (std::size_t i = 0; i < acc_b[l].size(); ++i) db[l][i] = static_cast<T>(acc_b[l][i]);
    }
  };

  std::int64_t longest = 0;
  for (const Run& r : runs) longest = std::max(longest, r.size);
  std::vector<double> p(static_cast<std::size_t>(longest));  // one run's softmax probabilities

  if (const std::shared_ptr<const AmplifierPieces> pieces = AmplifierPieces::for_path(mlp, runs, path)) {
    // ds summed per piece (s0) and weighted by g (s1), in buffer order; dg_i (mlp) = ds_i * slope.
    // Per entry on the pool (ds and the piece into scratch), the sums per piece in entry order.
    std::vector<double> s0(static_cast<std::size_t>(pieces->pieces()), 0.0), s1(s0.size(), 0.0);
    std::vector<double> ds(static_cast<std::size_t>(longest));
    std::vector<std::int64_t> piece(static_cast<std::size_t>(longest));
    for (std::size_t k = 0; k < runs.size(); ++k) {
      const std::int64_t begin = runs[k].begin, size = runs[k].size;
      run_probabilities(scores + begin, size, stats + 3 * k, p.data());
      const RunBackward run(dout + begin, g + begin, p.data(), size, stats + 3 * k, c);
      parallel_for(size, grain_for(80), [&](std::int64_t i0, std::int64_t i1) {
        for (std::int64_t r = i0; r < i1; ++r) {
          const std::int64_t i = begin + r;
          const auto ru = static_cast<std::size_t>(r);
          double dg_outside = 0;
          run.entry(dout[i], g[i], p[ru], ds[ru], dg_outside);
          piece[ru] = pieces->piece_of(g[i]);
          dg[i] = static_cast<T>(dg_outside + ds[ru] * pieces->slope(piece[ru]));
        }
      });
      for (std::int64_t r = 0; r < size; ++r) {
        const auto ru = static_cast<std::size_t>(r), m = static_cast<std::size_t>(piece[ru]);
        s0[m] += ds[ru];
        s1[m] += ds[ru] * double(g[begin + r]);
      }
    }
    std::vector<std::vector<double>> acc_w, acc_b;
    pieces->weight_gradients(s0, s1, acc_w, acc_b);
    write_weight_gradients(acc_w, acc_b);
    return;
  }

  const std::int64_t width = widest_hidden(mlp);
  const auto L = static_cast<std::int64_t>(layers);

  // Double accumulators of every weight gradient, and the chunk's scratch.
  std::vector<std::vector<double>> acc_w(layers), acc_b(layers);
  std::int64_t widest_product = 1;
  for (std::size_t l = 0; l < layers; ++l) {
    acc_w[l].assign(static_cast<std::size_t>(mlp.out[l] * mlp.in[l]), 0.0);
    acc_b[l].assign(static_cast<std::size_t>(mlp.out[l]), 0.0);
    widest_product = std::max(widest_product, mlp.out[l] * mlp.in[l]);
  }
  const std::size_t block = static_cast<std::size_t>(kChunk * width);
  std::vector<T> act_buf(block * (layers - 1)), grad_buf(2 * block), tmp(static_cast<std::size_t>(widest_product));
  std::vector<T*> act(layers - 1);
  for (std::size_t l = 0; l + 1 < layers; ++l) act[l] = act_buf.data() + l * block;
  std::vector<double> ds(kChunk), dg_outside(kChunk);

  for (std::size_t k = 0; k < runs.size(); ++k) {
    const std::int64_t begin = runs[k].begin, size = runs[k].size;
    const T* gr = g + begin;
    const T* s = scores + begin;
    const T* dy = dout + begin;
    run_probabilities(s, size, stats + 3 * k, p.data());
    const RunBackward run(dy, gr, p.data(), size, stats + 3 * k, c);

    for (std::int64_t at = 0; at < size; at += kChunk) {
      const std::int64_t e = std::min(kChunk, size - at);
      for (std::int64_t r = 0; r < e; ++r) {
        const std::int64_t i = at + r;
        run.entry(dy[i], gr[i], p[static_cast<std::size_t>(i)], ds[static_cast<std::size_t>(r)],
                  dg_outside[static_cast<std::size_t>(r)]);
      }
      const T* x = gr + at;
      hidden_forward(x, e, mlp, act.data());

      // Last layer (one output): d b = sum ds;  d w_j = sum_r ds_r act[r, j];  G = dZ of the last hidden layer.
      T* G = grad_buf.data();
      T* G2 = grad_buf.data() + block;
      {
        const std::int64_t h = mlp.in[layers - 1];
        const T* w = mlp.w[layers - 1];
        const T* a_last = act[layers - 2];
        double* aw = acc_w[layers - 1].data();
        for (std::int64_t r = 0; r < e; ++r) {
          const double d = ds[static_cast<std::size_t>(r)];
          acc_b[layers - 1][0] += d;
          const T* row = a_last + r * h;
          T* grow = G + r * h;
          for (std::int64_t j = 0; j < h; ++j) {
            aw[j] += d * double(row[j]);
            grow[j] = row[j] > T(0) ? static_cast<T>(d * double(w[j])) : T(0);
          }
        }
      }
      // Hidden x hidden layers, last to first: layer l maps act[l - 1] [e, in] to act[l] [e, out].
      for (std::int64_t l = L - 2; l >= 1; --l) {
        const auto lu = static_cast<std::size_t>(l);
        const std::int64_t in = mlp.in[lu], out = mlp.out[lu];
        gemm(G, act[lu - 1], tmp.data(), 1, out, in, e, true, false, T(1), T(0));  // tmp = G^T act[l-1]
        double* aw = acc_w[lu].data();
        for (std::int64_t idx = 0; idx < out * in; ++idx) aw[idx] += double(tmp[static_cast<std::size_t>(idx)]);
        double* ab = acc_b[lu].data();
        for (std::int64_t r = 0; r < e; ++r) {
          const T* grow = G + r * out;
          for (std::int64_t o = 0; o < out; ++o) ab[o] += double(grow[o]);
        }
        gemm(G, mlp.w[lu], G2, 1, e, in, out, false, false, T(1), T(0));  // G2 = G W
        const T* a_in = act[lu - 1];
        for (std::int64_t idx = 0; idx < e * in; ++idx) G2[idx] = a_in[idx] > T(0) ? G2[idx] : T(0);
        std::swap(G, G2);
      }
      // First layer (input width 1): d w_j = sum_r G[r, j] x_r, d b_j = sum_r G[r, j], dg_r (mlp) = sum_j G[r, j] w_j.
      {
        const std::int64_t h = mlp.out[0];
        const T* w = mlp.w[0];
        double* aw = acc_w[0].data();
        double* ab = acc_b[0].data();
        for (std::int64_t r = 0; r < e; ++r) {
          const double xr = x[r];
          const T* grow = G + r * h;
          double dgx = 0.0;
          for (std::int64_t j = 0; j < h; ++j) {
            const double v = grow[j];
            aw[j] += v * xr;
            ab[j] += v;
            dgx += v * double(w[j]);
          }
          dg[begin + at + r] = static_cast<T>(dg_outside[static_cast<std::size_t>(r)] + dgx);
        }
      }
    }
  }
  write_weight_gradients(acc_w, acc_b);
}

#define TG_INSTANTIATE(T)                                                                                          \
  template void neural_amplify_forward<T>(const T*, std::int64_t, const Mlp<T>&, const std::vector<Run>&, double, \
                                          T*, T*, T*, MlpPath);                                                    \
  template void neural_amplify_backward<T>(const T*, const T*, std::int64_t, const Mlp<T>&,                       \
                                           const std::vector<Run>&, double, const T*, const T*, T*,               \
                                           const std::vector<T*>&, const std::vector<T*>&, MlpPath);
TG_INSTANTIATE(float)
TG_INSTANTIATE(double)
#undef TG_INSTANTIATE

}  // namespace tg::cpu
