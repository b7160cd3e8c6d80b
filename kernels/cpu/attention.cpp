// Causal multi-head self-attention on packed qkv [B, T, 3C]: head h of q is qkv[b, t, h*D : (h+1)*D],
// of k the same at offset C, of v at offset 2C. Scores are scaled by 1/sqrt(D).
#include <cmath>
#include <vector>

#include "kernels/cpu/kernels.h"
#include "kernels/cpu/parallel.h"

namespace tg::cpu {

template <class T>
void attention_forward(const T* qkv, T* y, T* probs, std::int64_t b, std::int64_t t, std::int64_t c, std::int64_t h) {
  const std::int64_t d = c / h;
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  // Examples are independent: each writes its own rows of y and probs.
  parallel_for(b, grain_for(t * t * c * 2), [&](std::int64_t b0, std::int64_t b1) {
  std::vector<double> acc(static_cast<std::size_t>(d));
  for (std::int64_t bi = b0; bi < b1; ++bi) {
    for (std::int64_t hi = 0; hi < h; ++hi) {
      for (std::int64_t i = 0; i < t; ++i) {
        const T* q = qkv + (bi * t + i) * 3 * c + hi * d;
        T* p = probs + ((bi * h + hi) * t + i) * t;
        double max = -INFINITY;
        for (std::int64_t j = 0; j <= i; ++j) {
          const T* k = qkv + (bi * t + j) * 3 * c + c + hi * d;
          double dot = 0.0;
#pragma omp simd reduction(+ : dot)
          for (std::int64_t e = 0; e < d; ++e) dot += double(q[e]) * double(k[e]);
          p[j] = static_cast<T>(dot * scale);
          max = p[j] > max ? p[j] : max;
        }
        double total = 0.0;
        for (std::int64_t j = 0; j <= i; ++j) {
          p[j] = static_cast<T>(std::exp(p[j] - max));
          total += p[j];
        }
        for (std::int64_t j = 0; j <= i; ++j) p[j] = static_cast<T>(p[j] / total);
        for (std::int64_t j = i + 1; j < t; ++j) p[j] = T(0);  // masked (future) positions
        // out = sum_j p[j] v_j: each output element sums over j in order; the loops run over e innermost
        // so they vectorise.
        T* out = y + (bi * t + i) * c + hi * d;
        double* a = acc.data();
        for (std::int64_t e = 0; e < d; ++e) a[e] = 0.0;
        for (std::int64_t j = 0; j <= i; ++j) {
          const double pj = p[j];
          const T* v = qkv + (bi * t + j) * 3 * c + 2 * c + hi * d;
          for (std::int64_t e = 0; e < d; ++e) a[e] += pj * double(v[e]);
        }
        for (std::int64_t e = 0; e < d; ++e) out[e] = static_cast<T>(a[e]);
      }
    }
  }
  });
}

// With P the probabilities, dP = dY V^T, dS = P * (dP - rowsum(P * dP)):
//   dV = P^T dY,  dQ = scale * dS K,  dK = scale * dS^T Q.
template <class T>
void attention_backward(const T* dy, const T* qkv, const T* probs, T* dqkv, std::int64_t b, std::int64_t t,
                        std::int64_t c, std::int64_t h) {
  const std::int64_t d = c / h;
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  // Examples are independent: each accumulates into its own rows of dqkv only.
  parallel_for(b, grain_for(t * t * c * 4), [&](std::int64_t b0, std::int64_t b1) {
  for (std::int64_t n = b0 * t * 3 * c; n < b1 * t * 3 * c; ++n) dqkv[n] = T(0);
  std::vector<double> ds(static_cast<std::size_t>(t));
  for (std::int64_t bi = b0; bi < b1; ++bi) {
    for (std::int64_t hi = 0; hi < h; ++hi) {
      for (std::int64_t i = 0; i < t; ++i) {
        const T* p = probs + ((bi * h + hi) * t + i) * t;
        const T* dyi = dy + (bi * t + i) * c + hi * d;
        double row = 0.0;
        for (std::int64_t j = 0; j <= i; ++j) {
          const T* v = qkv + (bi * t + j) * 3 * c + 2 * c + hi * d;
          double dp = 0.0;
#pragma omp simd reduction(+ : dp)
          for (std::int64_t e = 0; e < d; ++e) dp += double(dyi[e]) * double(v[e]);
          ds[static_cast<std::size_t>(j)] = dp;
          row += double(p[j]) * dp;
        }
        const T* q = qkv + (bi * t + i) * 3 * c + hi * d;
        T* dq = dqkv + (bi * t + i) * 3 * c + hi * d;
        for (std::int64_t j = 0; j <= i; ++j) {
          const double dsij = double(p[j]) * (ds[static_cast<std::size_t>(j)] - row) * scale;
          const T* k = qkv + (bi * t + j) * 3 * c + c + hi * d;
          T* dk = dqkv + (bi * t + j) * 3 * c + c + hi * d;
          T* dv = dqkv + (bi * t + j) * 3 * c + 2 * c + hi * d;
          // dq, dk and dv are disjoint d-wide slices of dqkv, none of them q or k: the loop vectorises
          // (the compiler cannot prove that itself and would run it one element at a time).
#pragma omp simd
          for (std::int64_t e = 0; e < d; ++e) {
            dq[e] += static_cast<T>(dsij * double(k[e]));
            dk[e] += static_cast<T>(dsij * double(q[e]));
            dv[e] += static_cast<T>(double(p[j]) * double(dyi[e]));
          }
        }
      }
    }
  }
  });
}

// Second order: the gradient of attention_backward's dqkv, g = (gQ | gK | gV) [B, T, 3C], taken back to
// qkv and dy. Per row i, with s the scale, dP_ij = dY_i . V_j, r_i = sum_j P_ij dP_ij and
// U_ij = P_ij (dP_ij - r_i) (so dQ = s U K, dK = s U^T Q, dV = P^T dY):
//   H_ij = s (gQ_i . K_j + Q_i . gK_j)                         the gradient of U_ij
//   gdP_ij = P_ij (H_ij - sum_k P_ik H_ik)
//   gP_ij = H_ij (dP_ij - r_i) - dP_ij sum_k P_ik H_ik + gV_j . dY_i
//   gS_ij = P_ij (gP_ij - sum_k P_ik gP_ik)                    through the softmax
//   gQ_i = s sum_j (U_ij gK_j + gS_ij K_j),   gK_j = s sum_i (U_ij gQ_i + gS_ij Q_i),
//   gV_j = sum_i gdP_ij dY_i,                 gdY_i = sum_j (P_ij gV_j + gdP_ij V_j).
template <class T>
void attention_double_backward(const T* dy, const T* qkv, const T* probs, const T* g, T* gqkv, T* gdy,
                               std::int64_t b, std::int64_t t, std::int64_t c, std::int64_t h) {
  const std::int64_t d = c / h;
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  // Examples are independent: each writes its own rows of gqkv and gdy.
  parallel_for(b, grain_for(t * t * c * 8), [&](std::int64_t b0, std::int64_t b1) {
  for (std::int64_t n = b0 * t * 3 * c; n < b1 * t * 3 * c; ++n) gqkv[n] = T(0);
  const auto tt = static_cast<std::size_t>(t);
  std::vector<double> u(tt), gdp(tt), gs(tt), acc_q(static_cast<std::size_t>(d)), acc_dy(acc_q.size());
  for (std::int64_t bi = b0; bi < b1; ++bi) {
    for (std::int64_t hi = 0; hi < h; ++hi) {
      // Head hi's slice of row j of a [B, T, 3C] buffer: part 0 (q), 1 (k) or 2 (v).
      auto row = [&](auto* base, std::int64_t j, std::int64_t part) {
        return base + (bi * t + j) * 3 * c + part * c + hi * d;
      };
      for (std::int64_t i = 0; i < t; ++i) {
        const T* p = probs + ((bi * h + hi) * t + i) * t;
        const T* q = row(qkv, i, 0);
        const T* gq = row(g, i, 0);
        const T* dyi = dy + (bi * t + i) * c + hi * d;
        // u holds dP, gdp holds H and gs holds gV . dY until the row statistics are known.
        double r = 0.0, hp = 0.0;
        for (std::int64_t j = 0; j <= i; ++j) {
          const T* k = row(qkv, j, 1);
          const T* gk = row(g, j, 1);
          const T* v = row(qkv, j, 2);
          const T* gv = row(g, j, 2);
          double dp = 0.0, hq = 0.0, gvdy = 0.0;
#pragma omp simd reduction(+ : dp, hq, gvdy)
          for (std::int64_t e = 0; e < d; ++e) {
            dp += double(dyi[e]) * double(v[e]);
            hq += double(gq[e]) * double(k[e]) + double(q[e]) * double(gk[e]);
            gvdy += double(gv[e]) * double(dyi[e]);
          }
          const auto js = static_cast<std::size_t>(j);
          u[js] = dp;
          gdp[js] = hq * scale;
          gs[js] = gvdy;
          r += double(p[j]) * dp;
          hp += double(p[j]) * gdp[js];
        }
        double gpp = 0.0;
        for (std::int64_t j = 0; j <= i; ++j) {
          const auto js = static_cast<std::size_t>(j);
          const double pj = p[j], dp = u[js], hij = gdp[js];
          const double gp = hij * (dp - r) - hp * dp + gs[js];
          u[js] = pj * (dp - r);
          gdp[js] = pj * (hij - hp);
          gs[js] = gp;
          gpp += pj * gp;
        }
        for (std::int64_t j = 0; j <= i; ++j) {
          const auto js = static_cast<std::size_t>(j);
          gs[js] = double(p[j]) * (gs[js] - gpp);
        }
        double* aq = acc_q.data();
        double* ady = acc_dy.data();
        for (std::int64_t e = 0; e < d; ++e) aq[e] = ady[e] = 0.0;
        for (std::int64_t j = 0; j <= i; ++j) {
          const auto js = static_cast<std::size_t>(j);
          const double uj = u[js] * scale, gsj = gs[js] * scale, gdpj = gdp[js], pj = p[j];
          const T* k = row(qkv, j, 1);
          const T* gk = row(g, j, 1);
          const T* v = row(qkv, j, 2);
          const T* gv = row(g, j, 2);
          T* gkj = row(gqkv, j, 1);
          T* gvj = row(gqkv, j, 2);
          // gkj and gvj are disjoint d-wide slices of gqkv, none of them an input: the loop vectorises.
#pragma omp simd
          for (std::int64_t e = 0; e < d; ++e) {
            aq[e] += uj * double(gk[e]) + gsj * double(k[e]);
            ady[e] += pj * double(gv[e]) + gdpj * double(v[e]);
            gkj[e] += static_cast<T>(uj * double(gq[e]) + gsj * double(q[e]));
            gvj[e] += static_cast<T>(gdpj * double(dyi[e]));
          }
        }
        T* gqi = row(gqkv, i, 0);
        T* gdyi = gdy + (bi * t + i) * c + hi * d;
        for (std::int64_t e = 0; e < d; ++e) {
          gqi[e] = static_cast<T>(aq[e]);
          gdyi[e] = static_cast<T>(ady[e]);
        }
      }
    }
  }
  });
}

#define TG_INSTANTIATE(T)                                                                                          \
  template void attention_forward<T>(const T*, T*, T*, std::int64_t, std::int64_t, std::int64_t, std::int64_t);   \
  template void attention_backward<T>(const T*, const T*, const T*, T*, std::int64_t, std::int64_t, std::int64_t, \
                                      std::int64_t);                                                              \
  template void attention_double_backward<T>(const T*, const T*, const T*, const T*, T*, T*, std::int64_t,        \
                                             std::int64_t, std::int64_t, std::int64_t);
TG_INSTANTIATE(float)
TG_INSTANTIATE(double)
#undef TG_INSTANTIATE

}  // namespace tg::cpu
