// --method perp-grad (⊥Grad, docs/methods.md): the optimizer gets each parameter tensor's gradient
// without its component along the tensor's current weights,
//   g_perp = g - (<w, g> / <w, w>) w,
// rescaled to the norm the raw gradient had, g' = g_perp ||g|| / ||g_perp||. The step along w alone
// only scales the weights (and the logits) up, which lowers the loss of a fitted training set
// without changing any prediction ("naive loss minimisation"); removing it leaves the directions
// that change what the model computes.
//
// Four passes over the flat buffers and a few per-tensor scalars, all on the device: nothing is read
// on the host, so sync-free steps and CUDA graphs replay it. A tensor whose weights are all zero has
// nothing to project out (<w, w> = 0 gives coefficient 0). A gradient exactly along w leaves only
// rounding in g_perp, which the rescaling blows up to the gradient's norm, as in the paper's code.
#include "engine/backend.h"
#include "engine/ops.h"
#include "experiments/methods/method_factory.h"

namespace tg {

namespace {

class PerpGrad final : public GradientMethod {
 public:
  const char* name() const override { return "perp-grad"; }

  void transform(const ParameterTable& params, const StepContext&) override {
    NoGradGuard no_grad;
    Backend& be = backend_for(params.device());
    const Tensor& g = params.flat_grads();  // [padded numel]; the padding is 0 in g and in w
    const Tensor& w = params.flat_values();
    const std::vector<std::int64_t>& offsets = params.offsets();
    const auto tensors = static_cast<std::int64_t>(params.size());
    auto per_tensor = [&](ReduceOp op, const Tensor& x) {  // [tensors]
      Tensor out = Tensor::empty({tensors}, params.dtype(), params.device());
      be.segmented_reduce(op, x, offsets, out);
      return out;
    };
    constexpr double kTiny = 1e-30;  // keeps 0 / 0 at 0 and is below every norm that matters in f32
    const Tensor w_dot_g = per_tensor(ReduceOp::sum, mul(w, g));
    const Tensor w_dot_w = per_tensor(ReduceOp::sum_squares, w);
    const Tensor g_norm = sqrt(per_tensor(ReduceOp::sum_squares, g));
    Tensor along = w.clone();  // (<w, g> / <w, w>) w, per tensor
    be.segmented_scale(along, offsets, div(w_dot_g, add_scalar(w_dot_w, kTiny)));
    Tensor perp = sub(g, along);
    const Tensor perp_norm = sqrt(per_tensor(ReduceOp::sum_squares, perp));
    be.segmented_scale(perp, offsets, div(g_norm, add_scalar(perp_norm, kTiny)));
    Tensor grads = g;
    grads.copy_from_(perp);
  }
};

}  // namespace

std::unique_ptr<GradientMethod> make_perp_grad(const MethodSetup&) { return std::make_unique<PerpGrad>(); }

}  // namespace tg
