#include "kernels/cpu/cpu_method_kernels.h"

#include <vector>

#include "kernels/cpu/dispatch.h"
#include "kernels/cpu/kernels.h"

namespace tg::cpu {

namespace {

// The amplifier MLP's weights [W0, b0, ..., Wk, bk] as raw pointers and layer sizes.
template <class T>
Mlp<T> mlp_view(const std::vector<Tensor>& weights) {
  Mlp<T> mlp;
  for (std::size_t i = 0; i + 1 < weights.size(); i += 2) {
    mlp.w.push_back(ptr<const T>(weights[i]));
    mlp.b.push_back(ptr<const T>(weights[i + 1]));
    mlp.out.push_back(weights[i].size(0));
    mlp.in.push_back(weights[i].size(1));
  }
  return mlp;
}

std::vector<Run> runs_of(const std::vector<Segment>& segments) {
  std::vector<Run> runs;
  runs.reserve(segments.size());
  for (const Segment& s : segments) runs.push_back({s.begin, s.size});
  return runs;
}

class CpuMethodKernels final : public MethodKernels {
 public:
  void neural_amplify_forward(const Tensor& g, const std::vector<Tensor>& weights,
                              const std::vector<Segment>& segments, double c, MlpPath path, const Tensor& out,
                              const Tensor& scores, const Tensor& stats) override {
    dispatch_floating(g.dtype(), "neural_amplify_forward", [&](auto t) {
      using T = decltype(t);
      cpu::neural_amplify_forward(ptr<const T>(g), g.numel(), mlp_view<T>(weights), runs_of(segments), c, ptr<T>(out),
                                  ptr<T>(scores), ptr<T>(stats), path);
    });
  }

  void neural_amplify_backward(const Tensor& dout, const Tensor& g, const std::vector<Tensor>& weights,
                               const std::vector<Segment>& segments, double c, MlpPath path, const Tensor& scores,
                               const Tensor& stats, const Tensor& dg, const std::vector<Tensor>& dweights) override {
    dispatch_floating(g.dtype(), "neural_amplify_backward", [&](auto t) {
      using T = decltype(t);
      std::vector<T*> dw, db;
      for (std::size_t i = 0; i + 1 < dweights.size(); i += 2) {
        dw.push_back(ptr<T>(dweights[i]));
        db.push_back(ptr<T>(dweights[i + 1]));
      }
      cpu::neural_amplify_backward(ptr<const T>(dout), ptr<const T>(g), g.numel(), mlp_view<T>(weights),
                                   runs_of(segments), c, ptr<const T>(scores), ptr<const T>(stats), ptr<T>(dg), dw, db,
                                   path);
    });
  }

  void grokfast_ema(const Tensor& grad, const Tensor& mu, double alpha, double lambda, bool first_step) override {
    dispatch_floating(grad.dtype(), "grokfast_ema", [&](auto t) {
      using T = decltype(t);
      cpu::grokfast_ema(ptr<T>(grad), ptr<T>(mu), grad.numel(), static_cast<T>(alpha), static_cast<T>(lambda),
                        first_step);
    });
  }

  void grokfast_ma(const Tensor& grad, const Tensor& slot, const Tensor& sum, const Tensor& comp, double lambda,
                   std::int64_t window, bool evict, bool amplify) override {
    dispatch_floating(grad.dtype(), "grokfast_ma", [&](auto t) {
      using T = decltype(t);
      cpu::grokfast_ma(ptr<T>(grad), ptr<T>(slot), ptr<T>(sum), ptr<T>(comp), grad.numel(), static_cast<T>(lambda),
                       window, evict, amplify);
    });
  }
};

}  // namespace

MethodKernels& method_kernels() {
  static CpuMethodKernels* instance = new CpuMethodKernels();  // never destroyed, like the CPU backend
  return *instance;
}

}  // namespace tg::cpu
