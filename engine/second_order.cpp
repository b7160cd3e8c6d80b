#include "engine/second_order.h"

#include <fmt/format.h>

#include "engine/error.h"
#include "engine/ops.h"

namespace tg {

TensorList hessian_vector_product(const Tensor& loss, const TensorList& params, const TensorList& v,
                                  BackwardOptions options) {
  TG_CHECK(params.size() == v.size(), "hessian_vector_product: {} vectors for {} parameters", v.size(), params.size());
  for (std::size_t i = 0; i < params.size(); ++i) {
    TG_CHECK(v[i].shape() == params[i].shape(), "hessian_vector_product: vector {} is {} but parameter {} is {}", i,
             v[i].str(), i, params[i].str());
  }
  // g = d loss / d params, recorded; then d <g, v> / d params = H v (H is symmetric).
  const TensorList g = grad({loss}, params, {}, {.create_graph = true});
  return grad(g, params, v, options);
}

}  // namespace tg
