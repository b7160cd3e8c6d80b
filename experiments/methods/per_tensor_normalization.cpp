// --grad-normalize c: every parameter tensor's gradient rescaled to norm c, g' = c g / ||g||
// (docs/methods.md). The ablation that matched NeuralGrok without its amplifier; it runs after the
// chosen method, so it combines with any of them.
#include "experiments/methods/method_factory.h"
#include "optim/gradient_transforms.h"

namespace tg {

namespace {

class PerTensorNormalization final : public GradientMethod {
 public:
  explicit PerTensorNormalization(double c) : c_(c) {}
  const char* name() const override { return "per-tensor normalisation"; }
  void transform(const ParameterTable& params, const StepContext&) override { normalize_grads_per_tensor(params, c_); }

 private:
  double c_;
};

}  // namespace

std::unique_ptr<GradientMethod> make_per_tensor_normalization(const MethodSetup& setup) {
  return std::make_unique<PerTensorNormalization>(setup.config.grad_normalize);
}

}  // namespace tg
