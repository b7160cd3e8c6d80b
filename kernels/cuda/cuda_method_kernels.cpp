// The CUDA method kernels: unpack tensors into raw pointers and sizes and call the amplifier and
// Grokfast launchers of kernels/cuda/launch.cuh on the GPU backend's stream (gpu_context.h), so they
// run in order with every other kernel, scratch memory comes from the same caching allocator (and
// from a graph's capture pool while one is captured), and every failure becomes the same tg::Error.
#include "kernels/cuda/cuda_method_kernels.h"

#include <cuda_runtime_api.h>
#include <fmt/format.h>

#include <climits>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "engine/error.h"
#include "kernels/cuda/gpu_context.h"
#include "kernels/cuda/launch.cuh"

namespace tg::cuda {

namespace {

class CudaMethodKernels final : public MethodKernels {
 public:
  explicit CudaMethodKernels(GpuContext& gpu) : gpu_(gpu), name_(fmt::format("cuda:{}", gpu.index())) {
    gpu_.activate();
    int optin = 0;
    gpu_.check_call(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, gpu_.index()),
                    "cudaDeviceGetAttribute(MaxSharedMemoryPerBlockOptin)");
    gpu_.check_call(configure_amplifier_kernels(optin, amp_smem_limit_),
                    "configure_amplifier_kernels (cudaFuncSetAttribute)");
  }

  // ---- NeuralGrok amplifier

  void neural_amplify_forward(const Tensor& g, const std::vector<Tensor>& weights,
                              const std::vector<Segment>& segments, double c, MlpPath path, const Tensor& out,
                              const Tensor& scores, const Tensor& stats) override {
    const char* op = "neural_amplify_forward";
    const Args args = {{"g", g}, {"out", out}, {"scores", scores}, {"stats", stats}};
    gpu_.prepare(op, args);
    const AmpMlp mlp = amp_mlp(op, weights);
    const bool pieces = amp_use_pieces(op, mlp, weights, path);
    const int entries = pieces ? 0 : amp_tile_entries(op, mlp, weights);
    std::vector<std::int64_t> begin, size;
    for (const Segment& s : segments) {
      begin.push_back(s.begin);
      size.push_back(s.size);
    }
    const auto count = static_cast<std::int64_t>(segments.size());
    const std::size_t bytes = neural_amplify_forward_workspace_bytes(mlp, size.data(), count, entries, pieces);
    Scratch scratch(gpu_.caching_allocator(), bytes, op);
    gpu_.check_kernel(launch_neural_amplify_forward(ptr<const float>(g), g.numel(), mlp, begin.data(), size.data(),
                                                    count, static_cast<float>(c), entries, pieces, ptr<float>(out),
                                                    ptr<float>(scores), ptr<float>(stats), scratch.get(), bytes,
                                                    gpu_.stream()),
                      op, args);
  }

  void neural_amplify_backward(const Tensor& dout, const Tensor& g, const std::vector<Tensor>& weights,
                               const std::vector<Segment>& segments, double c, MlpPath path, const Tensor& scores,
                               const Tensor& stats, const Tensor& dg, const std::vector<Tensor>& dweights) override {
    const char* op = "neural_amplify_backward";
    const Args args = {{"dout", dout}, {"g", g}, {"scores", scores}, {"stats", stats}, {"dg", dg}};
    gpu_.prepare(op, args);
    const AmpMlp mlp = amp_mlp(op, weights);
    const bool pieces = amp_use_pieces(op, mlp, weights, path);
    const int entries = pieces ? 0 : amp_tile_entries(op, mlp, weights);
    TG_CHECK(dweights.size() == weights.size(), "cuda kernel {}: {} weight gradients for {} weights", op,
             dweights.size(), weights.size());
    AmpGrads grads;
    for (std::size_t i = 0; i < dweights.size(); ++i) {
      gpu_.prepare(op, {{"dweight", dweights[i]}});
      TG_CHECK(dweights[i].numel() == weights[i].numel(), "cuda kernel {}: gradient {} does not match weight {}", op,
               dweights[i].str(), weights[i].str());
      (i % 2 == 0 ? grads.w : grads.b)[i / 2] = ptr<float>(dweights[i]);
    }
    std::vector<std::int64_t> begin, size;
    for (const Segment& s : segments) {
      begin.push_back(s.begin);
      size.push_back(s.size);
    }
    const auto count = static_cast<std::int64_t>(segments.size());
    const std::size_t bytes = neural_amplify_backward_workspace_bytes(mlp, g.numel(), count, pieces);
    Scratch scratch(gpu_.caching_allocator(), bytes, op);
    gpu_.check_kernel(launch_neural_amplify_backward(ptr<const float>(dout), ptr<const float>(g), g.numel(), mlp,
                                                     begin.data(), size.data(), count, static_cast<float>(c), entries,
                                                     pieces, ptr<const float>(scores), ptr<const float>(stats),
                                                     ptr<float>(dg), grads, scratch.get(), bytes, gpu_.stream()),
                      op, args);
  }

  // ---- Grokfast filters

  void grokfast_ema(const Tensor& grad, const Tensor& mu, double alpha, double lambda, bool first_step) override {
    const Args args = {{"grad", grad}, {"mu", mu}};
    gpu_.prepare("grokfast_ema", args);
    gpu_.check_kernel(launch_grokfast_ema(ptr<float>(grad), ptr<float>(mu), grad.numel(), static_cast<float>(alpha),
                                          static_cast<float>(lambda), first_step, gpu_.stream()),
                      "grokfast_ema", args);
  }

  void grokfast_ma(const Tensor& grad, const Tensor& slot, const Tensor& sum, const Tensor& comp, double lambda,
                   std::int64_t window, bool evict, bool amplify) override {
    const Args args = {{"grad", grad}, {"slot", slot}, {"sum", sum}, {"comp", comp}};
    gpu_.prepare("grokfast_ma", args);
    gpu_.check_kernel(launch_grokfast_ma(ptr<float>(grad), ptr<float>(slot), ptr<float>(sum), ptr<float>(comp),
                                         grad.numel(), static_cast<float>(lambda), window, evict, amplify,
                                         gpu_.stream()),
                      "grokfast_ma", args);
  }

 private:
  // The amplifier's weights [W0, b0, ..., Wk, bk] (checked by the op) as the kernels' AmpMlp.
  AmpMlp amp_mlp(const char* op, const std::vector<Tensor>& weights) {
    const auto layers = static_cast<std::int64_t>(weights.size() / 2);
    TG_CHECK(layers >= 2 && layers <= kMaxAmpLayers,
             "cuda kernel {}: the amplifier has {} linear layers; the GPU kernels take 2 to {} (at most {} hidden "
             "layers)",
             op, layers, kMaxAmpLayers, kMaxAmpLayers - 1);
    AmpMlp mlp;
    mlp.layers = static_cast<int>(layers);
    for (std::int64_t l = 0; l < layers; ++l) {
      const Tensor& w = weights[static_cast<std::size_t>(2 * l)];
      const Tensor& b = weights[static_cast<std::size_t>(2 * l + 1)];
      gpu_.prepare(op, {{"weight", w}, {"bias", b}});
      TG_CHECK(w.dim() == 2 && w.size(0) <= INT_MAX && w.size(1) <= INT_MAX,
               "cuda kernel {}: amplifier weight {} is not a [out, in] matrix of int sizes", op, w.str());
      mlp.out[l] = static_cast<int>(w.size(0));
      mlp.in[l] = static_cast<int>(w.size(1));
      mlp.w[l] = ptr<const float>(w);
      mlp.b[l] = ptr<const float>(b);
    }
    return mlp;
  }

  // Whether the amplifier kernels evaluate this MLP as pieces (`path`, optim/method_kernels.h):
  // always when the pieces path takes it, unless `direct` is asked for; asking for `pieces` for an
  // MLP it does not take is an error.
  static bool amp_use_pieces(const char* op, const AmpMlp& mlp, const std::vector<Tensor>& weights, MlpPath path) {
    if (path == MlpPath::direct) return false;
    if (amplifier_pieces_supported(mlp)) return true;
    TG_CHECK(path != MlpPath::pieces,
             "cuda kernel {}: the amplifier MLP ({} linear layers) cannot run as pieces on the GPU (at most {} "
             "linear layers, {} units per layer, {} possible pieces, the product of (hidden size + 1), and {} "
             "possible unit states per level); use the direct path",
             op, weights.size() / 2, kMaxPieceLayers, kMaxPieceWidth, kMaxAmpPieces, kMaxPieceStates);
    return false;
  }

  // Entries per tile for this MLP on this GPU; an error when its hidden layers are too wide.
  int amp_tile_entries(const char* op, const AmpMlp& mlp, const std::vector<Tensor>& weights) const {
    const int entries = amplifier_tile_entries(mlp, amp_smem_limit_);
    if (entries > 0) return entries;
    std::string sizes;
    for (std::size_t i = 0; i + 2 < weights.size(); i += 2) {
      if (!sizes.empty()) sizes += ',';
      sizes += fmt::format("{}", weights[i].size(0));
    }
    throw Error(fmt::format("cuda kernel {} on {}: amplifier hidden sizes ({}) need more than the {} bytes of shared "
                            "memory a block may use on this GPU, even one entry per tile; use narrower hidden layers "
                            "or run the amplifier on the CPU",
                            op, name_, sizes, amp_smem_limit_));
  }

  GpuContext& gpu_;
  std::string name_;
  int amp_smem_limit_ = 48 * 1024;  // dynamic shared memory the amplifier kernels may use (configure_amplifier_kernels)
};

}  // namespace

MethodKernels& method_kernels(int index) {
  GpuContext& gpu = gpu_context(index);  // the backend's errors when there is no such GPU
  // Leaked on purpose, like the backends: tensors in static storage may outlive main().
  static std::mutex* mutex = new std::mutex();
  static auto* all = new std::map<int, CudaMethodKernels*>();
  std::lock_guard<std::mutex> lock(*mutex);
  CudaMethodKernels*& slot = (*all)[index];
  if (slot == nullptr) slot = new CudaMethodKernels(gpu);
  return *slot;
}

}  // namespace tg::cuda
