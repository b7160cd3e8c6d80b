// Shared input validation for the op layer. Every message starts with the op's name and shows the
// offending tensors as "[shape] dtype device".
#pragma once

#include <fmt/format.h>

#include <cstdint>
#include <initializer_list>
#include <vector>

#include "engine/backend.h"
#include "engine/error.h"
#include "engine/ops.h"
#include "engine/tensor.h"

namespace tg::detail {

inline void check_defined(const char* op, const Tensor& x, const char* what) {
  TG_CHECK(x.defined(), "{}: {} is undefined", op, what);
}

inline void check_floating(const char* op, const Tensor& x, const char* what) {
  check_defined(op, x, what);
  TG_CHECK(is_floating(x.dtype()), "{}: {} must be a floating tensor, got {}", op, what, x.str());
}

inline void check_ids(const char* op, const Tensor& x, const char* what) {
  check_defined(op, x, what);
  TG_CHECK(x.dtype() == DType::i32, "{}: {} must be an i32 tensor, got {}", op, what, x.str());
}

// All floating inputs of one op must share dtype and device.
inline void check_same(const char* op, std::initializer_list<std::pair<const Tensor*, const char*>> xs) {
  const Tensor* first = nullptr;
  const char* first_name = "";
  for (const auto& [x, name] : xs) {
    if (!x->defined()) continue;
    if (!first) {
      first = x;
      first_name = name;
      continue;
    }
    TG_CHECK(x->device() == first->device(), "{}: {} is on {} but {} is on {} ({} vs {})", op, name,
             x->device().str(), first_name, first->device().str(), x->str(), first->str());
    if (is_floating(x->dtype()) && is_floating(first->dtype())) {
      TG_CHECK(x->dtype() == first->dtype(), "{}: {} is {} but {} is {} ({} vs {})", op, name,
               dtype_name(x->dtype()), first_name, dtype_name(first->dtype()), x->str(), first->str());
    }
  }
}

// The arguments of a loss over classes (cross_entropy, stablemax_cross_entropy): logits [N, V] floating,
// targets i32 [N] on the same device, neither empty, every target in [0, V). The range check copies the
// targets to the host (they are small), unless an IdsCheckedGuard vouches for them: a target out of range
// would make the kernels read outside the logits row.
inline void check_logits_and_targets(const char* op, const Tensor& logits, const Tensor& targets) {
  check_floating(op, logits, "logits");
  check_ids(op, targets, "targets");
  check_same(op, {{&logits, "logits"}, {&targets, "targets"}});
  TG_CHECK(logits.dim() == 2, "{}: logits must be [N, V], got {}", op, logits.str());
  TG_CHECK(targets.dim() == 1 && targets.size(0) == logits.size(0), "{}: targets {} do not match logits {} (need [N])",
           op, targets.str(), logits.str());
  TG_CHECK(logits.size(0) > 0 && logits.size(1) > 0, "{}: logits {} are empty", op, logits.str());
  if (ids_checked_on_host()) return;
  const std::int64_t classes = logits.size(1);
  const std::vector<std::int32_t> t = targets.to_vector<std::int32_t>();
  for (std::size_t i = 0; i < t.size(); ++i) {
    TG_CHECK(t[i] >= 0 && t[i] < classes, "{}: target {} at row {} is outside [0, {})", op, t[i], i, classes);
  }
}

// Turns a possibly negative dimension into an index in [0, rank).
inline std::int64_t normalize_dim(const char* op, std::int64_t dim, std::int64_t rank) {
  const std::int64_t d = dim < 0 ? dim + rank : dim;
  TG_CHECK(d >= 0 && d < rank, "{}: dimension {} out of range for a tensor of rank {}", op, dim, rank);
  return d;
}

inline Backend& backend_of(const Tensor& x) { return backend_for(x.device()); }

// x viewed with `shape` (x broadcast to it): size-1 and missing leading dims get stride 0. Not recorded.
Tensor broadcast_view(const Tensor& x, const Shape& shape);
// NumPy broadcasting of two shapes; throws naming op and both shapes when incompatible.
Shape broadcast_shapes(const char* op, const Shape& a, const Shape& b);
// The recorded unary op behind neg, exp, ... (engine/ops/elementwise.cpp).
Tensor unary_op(UnaryOp op, const Tensor& x, double alpha = 1.0, double beta = 0.0);

}  // namespace tg::detail
