// Matrix products through OpenBLAS (cblas, row-major).
#include <cblas.h>

#include "kernels/cpu/kernels.h"

namespace tg::cpu {

namespace {
void gemm_one(const float* a, const float* b, float* out, std::int64_t m, std::int64_t n, std::int64_t k, bool ta,
              bool tb, float alpha, float beta) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, static_cast<int>(m),
              static_cast<int>(n), static_cast<int>(k), alpha, a, ta ? static_cast<int>(m) : static_cast<int>(k), b,
              tb ? static_cast<int>(k) : static_cast<int>(n), beta, out, static_cast<int>(n));
}
void gemm_one(const double* a, const double* b, double* out, std::int64_t m, std::int64_t n, std::int64_t k, bool ta,
              bool tb, double alpha, double beta) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, static_cast<int>(m),
              static_cast<int>(n), static_cast<int>(k), alpha, a, ta ? static_cast<int>(m) : static_cast<int>(k), b,
              tb ? static_cast<int>(k) : static_cast<int>(n), beta, out, static_cast<int>(n));
}
}  // namespace

template <class T>
void gemm(const T* a, const T* b, T* out, std::int64_t batch, std::int64_t m, std::int64_t n, std::int64_t k,
          bool trans_a, bool trans_b, T alpha, T beta) {
  for (std::int64_t i = 0; i < batch; ++i) {
    gemm_one(a + i * m * k, b + i * k * n, out + i * m * n, m, n, k, trans_a, trans_b, alpha, beta);
  }
}

template void gemm<float>(const float*, const float*, float*, std::int64_t, std::int64_t, std::int64_t, std::int64_t,
                          bool, bool, float, float);
template void gemm<double>(const double*, const double*, double*, std::int64_t, std::int64_t, std::int64_t,
                           std::int64_t, bool, bool, double, double);

}  // namespace tg::cpu
