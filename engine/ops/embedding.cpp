// Embedding lookup. Backward scatters rows of dy into the weight gradient; the kernels sum rows that
// share an id in index order (no atomics), so the result is bit-identical run to run.
#include "engine/ops.h"
#include "engine/ops/op_checks.h"

namespace tg {

using namespace detail;

namespace {

// dweight [V, C] from dy [..., C]. Linear in dy: its derivative with respect to dy is a lookup again.
Tensor embedding_backward(const Tensor& ids, const Tensor& dy, std::int64_t vocab) {
  const std::int64_t c = dy.size(-1), n = ids.numel();
  Tensor dweight = Tensor::empty({vocab, c}, dy.dtype(), dy.device());
  const Tensor dyc = dy.contiguous(), idc = ids.contiguous();
  backend_of(dy).embedding_backward(idc.as_strided({n}, {1}, idc.offset()), dyc.as_strided({n, c}, {c, 1}, dyc.offset()),
                                    dweight);
  TensorList outputs{dweight};
  tape().record("embedding_backward", {ids, dy}, outputs, [ids](const TensorList& g, const std::vector<bool>&) {
    return TensorList{Tensor(), embedding(ids, g[0])};
  });
  return outputs[0];
}

}  // namespace

Tensor embedding(const Tensor& ids, const Tensor& weight) {
  check_ids("embedding", ids, "ids");
  check_floating("embedding", weight, "weight");
  check_same("embedding", {{&ids, "ids"}, {&weight, "weight"}});
  TG_CHECK(weight.dim() == 2, "embedding: weight must be [V, C], got {}", weight.str());
  const std::int64_t vocab = weight.size(0), c = weight.size(1), n = ids.numel();
  const Tensor idc = ids.contiguous();
  if (!ids_checked_on_host()) {
    const std::vector<std::int32_t> host_ids = idc.to_vector<std::int32_t>();
    for (std::size_t i = 0; i < host_ids.size(); ++i) {
      TG_CHECK(host_ids[i] >= 0 && host_ids[i] < vocab,
               "embedding: id {} at position {} is outside the vocabulary [0, {})", host_ids[i], i, vocab);
    }
  }
  Shape out_shape = ids.shape();
  out_shape.push_back(c);
  Tensor out = Tensor::empty(out_shape, weight.dtype(), weight.device());
  if (out.numel() > 0) {
    backend_of(weight).embedding_forward(idc.as_strided({n}, {1}, idc.offset()), weight.contiguous(),
                                         out.as_strided({n, c}, {c, 1}, 0));
  }
  TensorList outputs{out};
  tape().record("embedding", {ids, weight}, outputs, [idc, vocab](const TensorList& g, const std::vector<bool>&) {
    return TensorList{Tensor(), embedding_backward(idc, g[0], vocab)};
  });
  return outputs[0];
}

}  // namespace tg
