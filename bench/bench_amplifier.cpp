// tapegrok_bench_amplifier: the fused NeuralGrok amplifier (MethodKernels::neural_amplify_forward /
// _backward) at the default model size against the composite path (Amplifier::apply_composite, the
// same function from primitive ops), with GFLOP/s against a measured GEMM ceiling and GB/s against a
// measured copy ceiling.
//
// Layout: the grokking Transformer's 29 parameter tensors (vocab 99, width 128, sequence 5, 2 layers,
// MLP 4x width: 422,784 parameters; each tensor's segment starts at a multiple of 64 as in a
// ParameterTable), gradients uniform in +-1e-3, the amplifier initialised like nn.Linear.
//
// Flops (per call, N = entries in the segments, layer l mapping in_l -> out_l features):
//   forward  = 2 N sum_l in_l out_l                   (= 2 N (h1 + h1 h2 + h2) for hidden (h1, h2))
//   backward = 3 x forward: the activations recomputed (1x), the weight gradients (1x) and the
//              gradients of each layer's input (1x); softmax, norms and elementwise work not counted.
// Bytes (fewest moved, f32): forward reads g, writes scores and out: 12 N; backward reads dout, g,
// scores, writes dg: 16 N (the weights are small and not counted).
//
// Both devices' kernels can evaluate the MLP as its exact piecewise-linear form (MlpPath::pieces; CPU:
// kernels/cpu/amplifier_pieces.h, GPU: kernels/cuda/amplifier_pieces.cuh) or run it on every entry
// (MlpPath::direct); both are timed, one beside the other. The pieces rows do not do the flops above,
// so they show no GFLOP/s.
//
// Timing: `warmup` calls, then `repeats` samples of one call each followed by Backend::synchronize;
// the median is reported with the interquartile spread.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/device.h"
#include "engine/ops.h"
#include "engine/parameters.h"
#include "engine/random.h"
#include "kernels/cpu/amplifier_pieces.h"
#include "kernels/cpu/kernels.h"
#include "optim/amplifier.h"
#include "optim/method_kernels.h"
#include "optim/neural_amplify.h"

namespace {

using tg::Device;
using tg::DType;
using tg::Tensor;
using tg::TensorList;
using Clock = std::chrono::steady_clock;
using i64 = std::int64_t;

struct Options {
  std::string device = "auto";
  std::string hidden = "128,128";
  int repeats = 5;
  int warmup = 1;
  bool composite = true;
  i64 vocab = 99, width = 128, seq = 5, layers = 2;
};

struct Timing {
  double median_s = 0, spread = 0;
  int samples = 0;
};

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

Timing measure(tg::Backend& be, int warmup, int repeats, const std::function<void()>& fn) {
  for (int i = 0; i < warmup; ++i) fn();
  be.synchronize();
  std::vector<double> s;
  for (int i = 0; i < std::max(repeats, 1); ++i) {
    const auto t0 = Clock::now();
    fn();
    be.synchronize();
    s.push_back(seconds_since(t0));
  }
  std::sort(s.begin(), s.end());
  auto q = [&](double f) { return s[static_cast<std::size_t>(f * static_cast<double>(s.size() - 1) + 0.5)]; };
  Timing t;
  t.median_s = q(0.5);
  t.spread = t.median_s > 0 ? (q(0.75) - q(0.25)) / t.median_s : 0.0;
  t.samples = static_cast<int>(s.size());
  return t;
}

// The Transformer's parameter shapes (PyTorch state-dict order).
std::vector<tg::ParameterSpec> transformer_specs(const Options& o) {
  const i64 d = o.width;
  std::vector<tg::ParameterSpec> specs{{"token_embeddings.weight", {o.vocab, d}}, {"position_embeddings.weight", {o.seq, d}}};
  for (i64 l = 0; l < o.layers; ++l) {
    const std::string p = fmt::format("layers.{}.", l);
    specs.push_back({p + "ln_1.weight", {d}});
    specs.push_back({p + "ln_1.bias", {d}});
    specs.push_back({p + "ln_2.weight", {d}});
    specs.push_back({p + "ln_2.bias", {d}});
    specs.push_back({p + "attn.in_proj_weight", {3 * d, d}});
    specs.push_back({p + "attn.in_proj_bias", {3 * d}});
    specs.push_back({p + "attn.out_proj.weight", {d, d}});
    specs.push_back({p + "attn.out_proj.bias", {d}});
    specs.push_back({p + "mlp.0.weight", {4 * d, d}});
    specs.push_back({p + "mlp.0.bias", {4 * d}});
    specs.push_back({p + "mlp.2.weight", {d, 4 * d}});
    specs.push_back({p + "mlp.2.bias", {d}});
  }
  specs.push_back({"ln_f.weight", {d}});
  specs.push_back({"ln_f.bias", {d}});
  specs.push_back({"head.weight", {o.vocab, d}});
  return specs;
}

void row(const std::string& name, const Timing& t, double flops, double bytes, double gemm_gflops, double copy_gbps) {
  const double gflops = flops / t.median_s / 1e9, gbps = bytes / t.median_s / 1e9;
  fmt::print("{:<34} {:>11.2f} {:>10} {:>7} {:>9} {:>7} {:>7.1f}% {:>7}\n", name, t.median_s * 1e3,
             flops > 0 ? fmt::format("{:.1f}", gflops) : "-",
             flops > 0 ? fmt::format("{:.1f}%", 100.0 * gflops / gemm_gflops) : "-",
             bytes > 0 ? fmt::format("{:.1f}", gbps) : "-",
             bytes > 0 ? fmt::format("{:.1f}%", 100.0 * gbps / copy_gbps) : "-", 100.0 * t.spread, t.samples);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"tapegrok_bench_amplifier: the fused NeuralGrok amplifier against the composite path"};
  Options o;
  app.add_option("--device", o.device, "cpu | cuda | cuda:N | auto");
  app.add_option("--hidden", o.hidden, "amplifier hidden sizes");
  app.add_option("--repeats", o.repeats, "timed samples per row");
  app.add_option("--warmup", o.warmup, "untimed calls per row");
  app.add_flag("!--no-composite", o.composite, "skip the composite path (slow on the CPU)");
  app.add_option("--vocab", o.vocab);
  app.add_option("--width", o.width);
  app.add_option("--seq", o.seq);
  app.add_option("--layers", o.layers);
  CLI11_PARSE(app, argc, argv);

  try {
    const Device device = tg::parse_device(o.device);
    tg::Backend& be = tg::backend_for(device);
    tg::NoGradGuard no_grad;
    tg::Rng rng(20240611);

    // ---- ceilings: a large copy and a large square GEMM, both through the backend
    const bool gpu = device.is_cuda();
    double copy_gbps = 0, gemm_gflops = 0;
    {
      const i64 n = gpu ? (i64{128} << 20) : (i64{16} << 20);
      Tensor src = tg::uniform_tensor(rng, {n}, -1, 1, DType::f32).to(device), dst = Tensor::zeros({n}, DType::f32, device);
      const Timing t = measure(be, 2, 7, [&] { be.copy(src, dst); });
      copy_gbps = 8.0 * static_cast<double>(n) / t.median_s / 1e9;
      if (!gpu) {
        const Timing m = measure(be, 2, 7, [&] {
          std::memcpy(dst.raw_data(), src.raw_data(), static_cast<std::size_t>(n) * sizeof(float));
        });
        copy_gbps = std::max(copy_gbps, 8.0 * static_cast<double>(n) / m.median_s / 1e9);
      }
      const i64 g = gpu ? 4096 : 1024;
      Tensor a = tg::uniform_tensor(rng, {g, g}, -1, 1, DType::f32).to(device);
      Tensor b = tg::uniform_tensor(rng, {g, g}, -1, 1, DType::f32).to(device);
      Tensor c = Tensor::zeros({g, g}, DType::f32, device);
      const Timing tg_ = measure(be, 1, 5, [&] { be.gemm(a, b, c, false, false, 1.0, 0.0); });
      gemm_gflops = 2.0 * static_cast<double>(g) * g * g / tg_.median_s / 1e9;
    }

    // ---- the problem
    const tg::ParameterTable model(transformer_specs(o), DType::f32, device);
    const std::vector<tg::Segment> segments = tg::parameter_segments(model);
    i64 n_entries = 0;
    for (const tg::Segment& s : segments) n_entries += s.size;
    {
      // Gradients in the segments, zero padding.
      std::vector<float> host(static_cast<std::size_t>(model.padded_numel()), 0.f);
      for (const tg::Segment& s : segments) {
        for (i64 i = s.begin; i < s.begin + s.size; ++i) {
          host[static_cast<std::size_t>(i)] = static_cast<float>(rng.uniform() * 2e-3 - 1e-3);
        }
      }
      Tensor g = model.flat_grads();
      g.copy_from_(Tensor::from_vector(host, {model.padded_numel()}));
    }
    const tg::Amplifier amp(tg::AmplifierConfig{tg::parse_hidden_sizes(o.hidden), 1.0});
    const tg::ParameterTable amp_params(amp.parameter_specs(), DType::f32, device);
    amp.initialize(amp_params, rng);
    const TensorList& weights = amp_params.values();
    double flops = 0;
    for (const Tensor& w : weights) {
      if (w.dim() == 2) flops += 2.0 * static_cast<double>(n_entries) * static_cast<double>(w.numel());
    }
    const double n = static_cast<double>(n_entries);
    const Tensor g = model.flat_grads();
    const i64 padded = model.padded_numel();

    fmt::print("tapegrok_bench_amplifier on {} | {} parameter tensors, N = {} entries ({} with padding) | hidden {} "
               "| {} amplifier weights\n",
               device.str(), segments.size(), n_entries, padded, o.hidden, amp_params.numel());
    fmt::print("ceilings: copy {:.1f} GB/s ({} read + written), GEMM {:.1f} GFLOP/s ({}^3 f32)\n", copy_gbps,
               gpu ? "512 MiB" : "64 MiB", gemm_gflops, gpu ? 4096 : 1024);
    fmt::print("flops per call: forward 2*N*sum(in*out) = {:.2f} GFLOP, backward 3x forward = {:.2f} GFLOP\n\n",
               flops / 1e9, 3 * flops / 1e9);
    fmt::print("{:<34} {:>11} {:>10} {:>7} {:>9} {:>7} {:>8} {:>7}\n", "path", "median ms", "GFLOP/s", "%gemm",
               "GB/s", "%copy", "spread", "samples");
    fmt::print("{}\n", std::string(34 + 11 + 10 + 7 + 9 + 7 + 8 + 7 + 7, '-'));

    // ---- fused: the method-kernel calls alone (no op, no tape)
    tg::MethodKernels& mk = tg::method_kernels_for(device);
    const i64 count = static_cast<i64>(segments.size());
    Tensor out = Tensor::empty({padded}, DType::f32, device), scores = Tensor::empty({padded}, DType::f32, device);
    Tensor stats = Tensor::empty({count, 3}, DType::f32, device);
    Tensor dout = tg::uniform_tensor(rng, {padded}, -1, 1, DType::f32).to(device);
    Tensor dg = Tensor::empty({padded}, DType::f32, device);
    TensorList dweights;
    for (const Tensor& w : weights) dweights.push_back(Tensor::empty(w.shape(), DType::f32, device));
    const double c = amp.config().c;
    // The pieces the CPU builds for these weights (the GPU builds the same ones on the device).
    i64 pieces = 0;
    if (!gpu) {
      tg::cpu::Mlp<float> mlp;
      for (std::size_t i = 0; i + 1 < weights.size(); i += 2) {
        mlp.w.push_back(weights[i].data<float>());
        mlp.b.push_back(weights[i + 1].data<float>());
        mlp.out.push_back(weights[i].size(0));
        mlp.in.push_back(weights[i].size(1));
      }
      const auto table = tg::cpu::AmplifierPieces::build(mlp, std::numeric_limits<double>::infinity());
      pieces = table ? table->pieces() : 0;
    }
    // Both ways of evaluating the MLP (optim/method_kernels.h's MlpPath), each a peer of the other: as
    // pieces (no MLP flops, so no GFLOP/s) and directly on every entry.
    std::vector<Timing> fwd, bwd;
    for (const tg::MlpPath path : {tg::MlpPath::pieces, tg::MlpPath::direct}) {
      const bool as_pieces = path == tg::MlpPath::pieces;
      const double path_flops = as_pieces ? 0.0 : flops;
      fwd.push_back(measure(be, o.warmup, o.repeats,
                            [&] { mk.neural_amplify_forward(g, weights, segments, c, path, out, scores, stats); }));
      row(as_pieces ? "fused forward (backend, pieces)" : "fused forward (backend, direct MLP)", fwd.back(),
          path_flops, 12 * n, gemm_gflops, copy_gbps);
      bwd.push_back(measure(be, o.warmup, o.repeats, [&] {
        mk.neural_amplify_backward(dout, g, weights, segments, c, path, scores, stats, dg, dweights);
      }));
      row(as_pieces ? "fused backward (backend, pieces)" : "fused backward (backend, direct MLP)", bwd.back(),
          3 * path_flops, 16 * n, gemm_gflops, copy_gbps);
    }
    fmt::print("  ({} the piecewise path is {:.1f}x faster forward, {:.1f}x backward than the direct MLP)\n",
               pieces > 0 ? fmt::format("{} linear pieces;", pieces) : std::string(),
               fwd[1].median_s / fwd[0].median_s, bwd[1].median_s / bwd[0].median_s);
    // ---- through the op layer and the tape: forward + backward to g and every weight
    auto forward_backward = [&](bool fused) {
      tg::GradModeGuard on(true);
      tg::tape().clear();
      Tensor gl = g.clone().set_requires_grad(true);
      TensorList wl;
      for (const Tensor& w : weights) wl.push_back(w.clone().set_requires_grad(true));
      const Tensor y = fused ? tg::neural_amplify(gl, wl, segments, c) : amp.apply_composite(wl, gl, segments);
      TensorList wrt{gl};
      wrt.insert(wrt.end(), wl.begin(), wl.end());
      const TensorList grads = tg::grad({tg::sum(tg::mul(y, dout))}, wrt);
      tg::tape().clear();
    };
    const Timing fused_fb = measure(be, o.warmup, o.repeats, [&] { forward_backward(true); });
    // The op layer runs the automatic path: pieces at this size, so no MLP flops to count.
    row("neural_amplify fwd+bwd (op, tape)", fused_fb, 0, 0, gemm_gflops, copy_gbps);
    if (o.composite) {
      const Timing cf = measure(be, o.warmup, o.repeats, [&] { (void)amp.apply_composite(weights, g, segments); });
      row("composite forward", cf, flops, 0, gemm_gflops, copy_gbps);
      const Timing cfb = measure(be, o.warmup, o.repeats, [&] { forward_backward(false); });
      row("composite fwd+bwd (tape)", cfb, 4 * flops, 0, gemm_gflops, copy_gbps);
      fmt::print("\nspeed-up of the fused path: forward {:.2f}x, forward+backward {:.2f}x\n", cf.median_s / fwd[0].median_s,
                 cfb.median_s / fused_fb.median_s);
    }
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
