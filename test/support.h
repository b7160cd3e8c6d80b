// Shared helpers for the tests: random inputs, error norms, and float64 finite-difference gradient checks.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "engine/ops.h"
#include "engine/random.h"

namespace tgtest {

using tg::DType;
using tg::Shape;
using tg::Tensor;
using tg::TensorList;

// Values of any tensor as doubles on the host (contiguous order).
std::vector<double> values(const Tensor& t);

// ||out - ref|| / ||ref|| (||out|| when ref is all zero). NaN or inf anywhere gives +inf: never passes.
double rel_error(const Tensor& out, const Tensor& ref);
double rel_error(const std::vector<double>& out, const std::vector<double>& ref);

Tensor random(tg::Rng& rng, const Shape& shape, DType dtype = DType::f64, double low = -1.0, double high = 1.0);
Tensor random_ids(tg::Rng& rng, const Shape& shape, std::int64_t below);

// While alive, new tensors are filled with NaN, so an output a kernel forgets to write fails its check.
struct PoisonGuard {
  PoisonGuard() { tg::set_poison_new_tensors(true); }
  ~PoisonGuard() { tg::set_poison_new_tensors(false); }
  PoisonGuard(const PoisonGuard&) = delete;
  PoisonGuard& operator=(const PoisonGuard&) = delete;
};

// A function of several tensors to one tensor, used by gradient checks.
using Function = std::function<Tensor(const TensorList&)>;

struct GradCheckResult {
  double max_rel_error = 0.0;  // over the inputs: ||analytic - numeric|| / ||numeric||
  std::string worst;           // which input
};

// Compares d<w, f(x)>/dx_k from the tape against central differences in float64 for every floating
// input k marked in `check` (all floating inputs when empty). Inputs must be f64 CPU tensors; i32
// inputs are passed through unchanged.
GradCheckResult gradcheck(const Function& f, const TensorList& inputs, std::vector<bool> check = {},
                          double step = 1e-6, std::uint64_t seed = 7);

// Second order: checks the tape's derivative of x -> grad<w, f(x)>/dx (recorded with create_graph)
// against central differences of that gradient, i.e. Hessian-vector products of f.
GradCheckResult gradgradcheck(const Function& f, const TensorList& inputs, double step = 1e-5, std::uint64_t seed = 11);

// While alive, write() past `bytes` in any file fails with EFBIG, even for root, as a full disk fails
// it with ENOSPC (RLIMIT_FSIZE, with SIGXFSZ ignored so the process survives).
class FileSizeLimit {
 public:
  explicit FileSizeLimit(unsigned long bytes);
  ~FileSizeLimit();
  FileSizeLimit(const FileSizeLimit&) = delete;
  FileSizeLimit& operator=(const FileSizeLimit&) = delete;

 private:
  unsigned long old_soft_limit_ = 0;
  void (*old_handler_)(int) = nullptr;
};

}  // namespace tgtest
