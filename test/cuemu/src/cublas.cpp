// cuemu's stand-in for libcublas: the handle calls and the two single-precision GEMMs tapegrok uses,
// computed by OpenBLAS's column-major sgemm with cuBLAS's argument rules (column-major operands,
// op(A) m x k, op(B) k x n, leading dimensions, strides between batches). Arguments cuBLAS rejects
// return CUBLAS_STATUS_INVALID_VALUE; an operand that reaches outside its device allocation is an
// out-of-bounds access and aborts with the call, the operand and its extent.
#include <cublas_v2.h>
#include <cblas.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>

#include "test/cuemu/src/runtime_state.h"

struct cublasContext {
  cudaStream_t stream = nullptr;
};

namespace {

using cuemu::fail;

bool valid_op(cublasOperation_t op) { return op == CUBLAS_OP_N || op == CUBLAS_OP_T; }

cublasStatus_t check_arguments(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, int lda, int ldb,
                               int ldc) {
  if (!valid_op(ta) || !valid_op(tb) || m < 0 || n < 0 || k < 0) return CUBLAS_STATUS_INVALID_VALUE;
  if (lda < std::max(1, ta == CUBLAS_OP_N ? m : k) || ldb < std::max(1, tb == CUBLAS_OP_N ? k : n) ||
      ldc < std::max(1, m)) {
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  return CUBLAS_STATUS_SUCCESS;
}

// Elements a column-major `rows x cols` operand with leading dimension ld spans.
std::int64_t extent(std::int64_t rows, std::int64_t cols, std::int64_t ld) {
  return rows == 0 || cols == 0 ? 0 : (cols - 1) * ld + rows;
}

void check_operand(const char* call, const char* name, const float* p, std::int64_t elements) {
  if (elements == 0) return;
  if (!cuemu::is_device_range(p, static_cast<std::size_t>(elements) * sizeof(float))) {
    fail(std::string(call) + ": operand " + name + " (" + cuemu::fmt_pointer(p) + ", " + std::to_string(elements) +
         " floats) is not inside one device allocation: an out-of-bounds access on a GPU");
  }
}

struct Gemm {
  cublasOperation_t ta, tb;
  int m, n, k;
  float alpha, beta;
  int lda, ldb, ldc;
  std::int64_t a_elems() const { return ta == CUBLAS_OP_N ? extent(m, k, lda) : extent(k, m, lda); }
  std::int64_t b_elems() const { return tb == CUBLAS_OP_N ? extent(k, n, ldb) : extent(n, k, ldb); }
  std::int64_t c_elems() const { return extent(m, n, ldc); }

  void check(const char* call, const float* A, const float* B, const float* C) const {
    if (m == 0 || n == 0) return;
    if (k > 0 && alpha != 0.f) {
      check_operand(call, "A", A, a_elems());
      check_operand(call, "B", B, b_elems());
    }
    check_operand(call, "C", C, c_elems());
    const auto overlaps = [&](const float* x, std::int64_t nx) {
      return nx > 0 && k > 0 && x < C + c_elems() && C < x + nx;
    };
    if (overlaps(A, a_elems()) || overlaps(B, b_elems())) {
      fail(std::string(call) + ": C overlaps an input (cuBLAS leaves the result undefined)");
    }
  }

  // C = alpha op(A) op(B) + beta C; with beta == 0, C is written without being read (it may be NaN).
  void run(const float* A, const float* B, float* C) const {
    if (m == 0 || n == 0) return;
    if (beta == 0.f) {
      for (int j = 0; j < n; ++j) std::memset(C + std::int64_t(j) * ldc, 0, sizeof(float) * std::size_t(m));
    }
    if (k == 0 || alpha == 0.f) {
      if (beta != 0.f && beta != 1.f) {
        for (int j = 0; j < n; ++j) {
          for (int i = 0; i < m; ++i) C[i + std::int64_t(j) * ldc] *= beta;
        }
      }
      return;
    }
    cblas_sgemm(CblasColMajor, ta == CUBLAS_OP_N ? CblasNoTrans : CblasTrans,
                tb == CUBLAS_OP_N ? CblasNoTrans : CblasTrans, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
  }
};

}  // namespace

extern "C" {

cublasStatus_t cublasCreate_v2(cublasHandle_t* handle) {
  *handle = new cublasContext;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy_v2(cublasHandle_t handle) {
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream_v2(cublasHandle_t handle, cudaStream_t stream) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->stream = stream;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t) {
  return handle ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_NOT_INITIALIZED;
}
cublasStatus_t cublasSetWorkspace_v2(cublasHandle_t handle, void* workspace, size_t bytes) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (bytes > 0 && !cuemu::is_device_range(workspace, bytes)) return CUBLAS_STATUS_INVALID_VALUE;
  return CUBLAS_STATUS_SUCCESS;
}
const char* cublasGetStatusName(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    default: return "CUBLAS_STATUS_UNKNOWN";
  }
}
const char* cublasGetStatusString(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "the library was not initialized";
    case CUBLAS_STATUS_INVALID_VALUE: return "an invalid numeric value was used as an argument";
    default: return "unknown error (emulated cuBLAS)";
  }
}

cublasStatus_t cublasSgemm_v2(cublasHandle_t handle, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                              const float* alpha, const float* A, int lda, const float* B, int ldb, const float* beta,
                              float* C, int ldc) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (const cublasStatus_t s = check_arguments(ta, tb, m, n, k, lda, ldb, ldc); s != CUBLAS_STATUS_SUCCESS) return s;
  const Gemm g{ta, tb, m, n, k, *alpha, *beta, lda, ldb, ldc};  // host scalars: read at the call
  g.check("cublasSgemm", A, B, C);
  cuemu::submit(handle->stream, [g, A, B, C] { g.run(A, B, C); });
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t handle, cublasOperation_t ta, cublasOperation_t tb, int m,
                                         int n, int k, const float* alpha, const float* A, int lda,
                                         long long int stride_a, const float* B, int ldb, long long int stride_b,
                                         const float* beta, float* C, int ldc, long long int stride_c, int batches) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (const cublasStatus_t s = check_arguments(ta, tb, m, n, k, lda, ldb, ldc); s != CUBLAS_STATUS_SUCCESS) return s;
  if (batches < 0) return CUBLAS_STATUS_INVALID_VALUE;
  const Gemm g{ta, tb, m, n, k, *alpha, *beta, lda, ldb, ldc};
  for (int i = 0; i < batches; ++i) g.check("cublasSgemmStridedBatched", A + i * stride_a, B + i * stride_b, C + i * stride_c);
  cuemu::submit(handle->stream, [g, A, B, C, stride_a, stride_b, stride_c, batches] {
    for (int i = 0; i < batches; ++i) g.run(A + i * stride_a, B + i * stride_b, C + i * stride_c);
  });
  return CUBLAS_STATUS_SUCCESS;
}

}  // extern "C"
