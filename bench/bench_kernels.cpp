// tapegrok_bench_kernels: times every custom kernel of one device, called directly through
// backend_for(device) (no ops layer, no tape), against two ceilings measured in the same process.
//
//   ceilings  memory bandwidth: a large contiguous device-to-device copy through Backend::copy,
//             counting bytes read + bytes written;  GEMM rate: a large square f32 Backend::gemm.
//   sections  "model": the grokking Transformer's real sizes (batch 512, seq 5, C 128, 4 heads,
//             vocab 99, MLP 4C, 2 layers);  "large": the same kernels with more rows, so that one
//             tensor is ~32 MiB on the CPU and ~128 MiB on a GPU (bigger than the caches).
//
// Timing. Inputs are allocated once per kernel and filled with random, never-zero data. After
// `warmup` untimed calls, one call is timed to pick a batch size: a sample is `batch` back-to-back
// calls followed by Backend::synchronize(), divided by `batch`, with `batch` chosen so a sample
// lasts about `target_sample_s` (batch 1, i.e. one synchronised call per sample, when one call alone
// takes that long). On a GPU this measures back-to-back throughput, so tiny kernels include their
// share of launch overhead, as they do in a training step. The reported time is the median sample;
// "spread" is the interquartile range over the median.
//
// Bytes are the fewest a kernel must move through memory: every input read once, every output
// written once (the formula sits next to each kernel below and goes into the JSON). GEMM rows report
// 2*M*N*K flops. At the model sizes the working set fits in the caches (L2 on a GPU, L2/L3 on the
// CPU), so GB/s there can exceed the DRAM copy ceiling; each section therefore starts with a plain
// copy of that section's typical tensor as a same-size reference.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "engine/backend.h"
#include "engine/device.h"
#include "engine/error.h"
#include "engine/random.h"
#include "engine/tensor.h"

#ifndef TAPEGROK_BUILD_TYPE
#define TAPEGROK_BUILD_TYPE "unknown"
#endif
#ifdef __clang__
#define TAPEGROK_COMPILER "clang " __clang_version__
#else
#define TAPEGROK_COMPILER "g++ " __VERSION__
#endif

namespace {

using tg::Backend;
using tg::Device;
using tg::DType;
using tg::Shape;
using tg::Tensor;
using Clock = std::chrono::steady_clock;
using i64 = std::int64_t;

constexpr double kF = 4.0;  // bytes per f32 element
constexpr double kI = 4.0;  // bytes per i32 element
constexpr double kMiB = 1024.0 * 1024.0;

struct Options {
  std::string device = "auto";
  int repeats = 30;        // most samples per kernel
  int warmup = 3;          // untimed calls before the calibration call
  std::string json;        // also write every row here
  bool quick = false;
  double budget_s = 0.8;   // stop sampling a kernel after this long (once min_samples are in)
  std::string filter;      // only kernels whose name contains this
  std::string sections = "model,large";
  // The model (defaults: the grokking Transformer).
  i64 batch = 512, seq = 5, width = 128, heads = 4, vocab = 99, layers = 2, mlp_ratio = 4;
  i64 large_elems = 0;     // elements of one "large" tensor; 0: 8 Mi (4 Mi with --quick) on the CPU, 32 Mi on CUDA
};

struct Timing {
  double median_us = 0, p25_us = 0, p75_us = 0, min_us = 0;
  int samples = 0, batch = 1;
};

struct Row {
  std::string section, kernel, shape, formula;
  double bytes = 0, flops = 0;
  Timing t;
  double gbps = 0, gflops = 0, fraction = 0;
};

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

double quantile(std::vector<double> v, double q) {  // linear interpolation between order statistics
  std::sort(v.begin(), v.end());
  const double pos = q * static_cast<double>(v.size() - 1);
  const auto lo = static_cast<std::size_t>(std::floor(pos));
  const std::size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (pos - static_cast<double>(lo)) * (v[hi] - v[lo]);
}

std::string cpu_model_name() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      if (colon != std::string::npos) {
        std::string name = line.substr(colon + 1);
        name.erase(0, name.find_first_not_of(" \t"));
        return name;
      }
    }
  }
  return "unknown CPU";
}

std::string load_average() {  // the 1-minute load average, "" where /proc/loadavg is missing
  std::ifstream in("/proc/loadavg");
  std::string first;
  in >> first;
  return first;
}

std::string now_string() {
  const std::time_t t = std::time(nullptr);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S %Z", std::localtime(&t));
  return buf;
}

std::string mib(double bytes) { return fmt::format("{:.1f} MiB", bytes / kMiB); }

struct Ceilings {
  double backend_copy_gbps = 0, memcpy_gbps = 0, gemm_gflops = 0, copy_bytes = 0;
  i64 copy_elems = 0, gemm_n = 0;
  Timing copy_t, memcpy_t, gemm_t;
};

class Harness {
 public:
  Harness(Device device, Options opt)
      : device_(device), be_(tg::backend_for(device)), opt_(std::move(opt)), rng_(20240611) {
    target_sample_s_ = device_.is_cuda() ? (opt_.quick ? 0.5e-3 : 2e-3) : (opt_.quick ? 1e-3 : 2e-3);
    min_samples_ = opt_.quick ? 3 : 5;
  }

  Device device() const { return device_; }
  Backend& backend() { return be_; }
  const Options& options() const { return opt_; }

  // f32 tensor with values of random sign and magnitude in [lo, hi] (lo > 0: never zero).
  Tensor random(const Shape& shape, double lo = 0.05, double hi = 1.0, bool positive = false) {
    const i64 n = tg::shape_numel(shape);
    std::vector<float> host(static_cast<std::size_t>(n));
    for (auto& x : host) {
      const std::uint64_t r = rng_.next_u64();
      const double mag = lo + (hi - lo) * static_cast<double>(r >> 11) * 0x1.0p-53;
      x = static_cast<float>(positive || (r & 1) ? mag : -mag);
    }
    Tensor t = Tensor::empty(shape, DType::f32, device_);
    be_.copy_from_host(t.raw_data(), host.data(), host.size() * sizeof(float));
    return t;
  }
  Tensor positive(const Shape& shape, double lo, double hi) { return random(shape, lo, hi, true); }

  // i32 tensor of uniform integers in [0, bound).
  Tensor ids(const Shape& shape, i64 bound) {
    std::vector<std::int32_t> host(static_cast<std::size_t>(tg::shape_numel(shape)));
    for (auto& x : host) x = static_cast<std::int32_t>(rng_.below(bound));
    Tensor t = Tensor::empty(shape, DType::i32, device_);
    be_.copy_from_host(t.raw_data(), host.data(), host.size() * sizeof(std::int32_t));
    return t;
  }

  // Median-of-samples timing (see the file comment).
  Timing measure(const std::function<void()>& fn, int max_samples, double budget_s) {
    // Warm-up: `warmup` calls, cut short once they have taken a quarter of the budget (slow kernels).
    const auto warm_start = Clock::now();
    for (int i = 0; i < opt_.warmup; ++i) {
      fn();
      be_.synchronize();
      if (seconds_since(warm_start) > 0.25 * budget_s) break;
    }
    auto timed = [&](int batch) {
      be_.synchronize();
      const auto t0 = Clock::now();
      for (int i = 0; i < batch; ++i) fn();
      be_.synchronize();
      return seconds_since(t0);
    };
    const auto start = Clock::now();
    std::vector<double> samples;
    const double one = timed(1);
    Timing t;
    if (one >= target_sample_s_) {
      t.batch = 1;
      samples.push_back(one);  // already a valid synchronised single-call sample
    } else {
      t.batch = static_cast<int>(std::clamp(std::ceil(target_sample_s_ / std::max(one, 1e-9)), 1.0, 20000.0));
    }
    max_samples = std::max(max_samples, 1);
    while (static_cast<int>(samples.size()) < max_samples &&
           (static_cast<int>(samples.size()) < min_samples_ || seconds_since(start) < budget_s)) {
      samples.push_back(timed(t.batch) / t.batch);
    }
    t.samples = static_cast<int>(samples.size());
    t.median_us = quantile(samples, 0.5) * 1e6;
    t.p25_us = quantile(samples, 0.25) * 1e6;
    t.p75_us = quantile(samples, 0.75) * 1e6;
    t.min_us = *std::min_element(samples.begin(), samples.end()) * 1e6;
    return t;
  }

  // ---- ceilings ----
  // Measures both ceilings; the start-up measurement is the one every %ceil uses. The end-of-run
  // re-measurement only checks that the machine's state (other load, clocks) stayed the same.
  void measure_ceilings() {
    Ceilings& c = start_;
    c = ceilings(std::max(opt_.repeats, 10), 3 * opt_.budget_s);
    copy_gbps_ = std::max(c.backend_copy_gbps, c.memcpy_gbps);
    gemm_gflops_ = c.gemm_gflops;
  }

  void recheck_ceilings() {
    end_ = ceilings(10, opt_.budget_s);
    const double copy_end = std::max(end_.backend_copy_gbps, end_.memcpy_gbps);
    fmt::print("\nceilings re-measured at the end: bandwidth {:.1f} GB/s (start {:.1f}), GEMM {:.1f} GFLOP/s "
               "(start {:.1f})\n",
               copy_end, copy_gbps_, end_.gemm_gflops, gemm_gflops_);
    const auto off = [](double a, double b) { return std::abs(a - b) > 0.15 * std::max(a, b); };
    if (off(copy_end, copy_gbps_) || off(end_.gemm_gflops, gemm_gflops_)) {
      fmt::print("WARNING: a ceiling moved by more than 15% during the run (other load on the machine?); "
                 "%ceil values are unreliable, rerun on a quiet machine\n");
    }
    std::fflush(stdout);
  }

  Ceilings ceilings(int repeats, double budget_s) {
    const bool gpu = device_.is_cuda();
    Ceilings c;
    {  // bandwidth: one large contiguous copy, bytes read + written
      const i64 n = gpu ? (i64{128} << 20) : (i64{16} << 20);  // 512 MiB / 64 MiB per buffer
      Tensor src = random({n}), dst = random({n});
      c.copy_elems = n;
      c.copy_bytes = 2.0 * kF * static_cast<double>(n);
      c.copy_t = measure([&] { be_.copy(src, dst); }, repeats, budget_s);
      c.backend_copy_gbps = c.copy_bytes / (c.copy_t.median_us * 1e-6) / 1e9;
      if (!gpu) {
        // On the CPU "device memory" is host memory, so std::memcpy is a device-to-device copy too, and
        // often faster than Backend::copy's generic strided loop. The ceiling is the faster of the two.
        c.memcpy_t = measure([&] { std::memcpy(dst.raw_data(), src.raw_data(), static_cast<std::size_t>(kF * n)); },
                             repeats, budget_s);
        c.memcpy_gbps = c.copy_bytes / (c.memcpy_t.median_us * 1e-6) / 1e9;
      }
    }
    {  // GEMM: one large square f32 product, 2*N^3 flops
      const i64 n = gpu ? 4096 : 1024;
      Tensor a = random({n, n}), b = random({n, n}), out = random({n, n});
      c.gemm_n = n;
      c.gemm_t = measure([&] { be_.gemm(a, b, out, false, false, 1.0, 0.0); }, repeats, budget_s);
      c.gemm_gflops = 2.0 * static_cast<double>(n) * n * n / (c.gemm_t.median_us * 1e-6) / 1e9;
    }
    return c;
  }

  void print_ceilings() const {
    const Ceilings& c = start_;
    const double n = static_cast<double>(c.copy_elems);
    fmt::print("ceilings (measured now):\n");
    fmt::print("  memory bandwidth {:9.1f} GB/s    copy of {} f32 ({} read + {} written) via Backend::copy: {:.1f} us\n",
               c.backend_copy_gbps, c.copy_elems, mib(kF * n), mib(kF * n), c.copy_t.median_us);
    if (c.memcpy_gbps > 0) {
      fmt::print("                   {:9.1f} GB/s    the same copy with std::memcpy: {:.1f} us\n", c.memcpy_gbps,
                 c.memcpy_t.median_us);
      fmt::print("                   -> bandwidth ceiling {:.1f} GB/s (the faster of the two)\n", copy_gbps_);
    }
    fmt::print("  GEMM rate        {:9.1f} GFLOP/s {}^3 f32 Backend::gemm (2*N^3 flops): {:.1f} us\n", c.gemm_gflops,
               c.gemm_n, c.gemm_t.median_us);
    std::fflush(stdout);
  }

  // ---- rows ----
  bool section_enabled(const std::string& name) const {
    return ("," + opt_.sections + ",").find("," + name + ",") != std::string::npos;
  }

  void begin_section(const std::string& name, const std::string& description) {
    section_ = name;
    fmt::print("\n== {}: {}\n", name, description);
    fmt::print("{:<26} {:<34} {:>11} {:>9} {:>9} {:>7} {:>7} {:>11}\n", "kernel", "shape", "median us", "GB/s",
               "GFLOP/s", "%ceil", "spread", "samples");
    fmt::print("{}\n", std::string(26 + 34 + 11 + 9 + 9 + 7 + 7 + 11 + 7, '-'));
    std::fflush(stdout);
  }

  // Times one kernel. bytes: fewest bytes moved; flops: > 0 only for GEMMs (then %ceil is of the GEMM
  // ceiling, otherwise of the copy bandwidth).
  void row(const std::string& kernel, const std::string& shape, double bytes, double flops, const std::string& formula,
           const std::function<void()>& fn) {
    if (!opt_.filter.empty() && kernel.find(opt_.filter) == std::string::npos) return;
    Row r;
    r.section = section_;
    r.kernel = kernel;
    r.shape = shape;
    r.formula = formula;
    r.bytes = bytes;
    r.flops = flops;
    r.t = measure(fn, opt_.repeats, opt_.budget_s);
    const double s = r.t.median_us * 1e-6;
    r.gbps = bytes / s / 1e9;
    r.gflops = flops / s / 1e9;
    r.fraction = flops > 0 ? r.gflops / gemm_gflops_ : r.gbps / copy_gbps_;
    const double spread = r.t.median_us > 0 ? (r.t.p75_us - r.t.p25_us) / r.t.median_us : 0.0;
    fmt::print("{:<26} {:<34} {:>11.2f} {:>9.2f} {:>9} {:>6.1f}% {:>6.1f}% {:>11}\n", r.kernel, r.shape, r.t.median_us,
               r.gbps, flops > 0 ? fmt::format("{:.1f}", r.gflops) : std::string("-"), 100.0 * r.fraction,
               100.0 * spread, fmt::format("{}x{}", r.t.samples, r.t.batch));
    std::fflush(stdout);
    rows_.push_back(std::move(r));
  }

  nlohmann::json to_json(const std::string& device_desc, const std::string& date) const {
    nlohmann::json j;
    j["device"] = device_.str();
    j["device_description"] = device_desc;
    j["date"] = date;
    j["build_type"] = TAPEGROK_BUILD_TYPE;
    j["compiler"] = TAPEGROK_COMPILER;
    j["options"] = {{"repeats", opt_.repeats},   {"warmup", opt_.warmup},         {"quick", opt_.quick},
                    {"budget_s", opt_.budget_s}, {"target_sample_s", target_sample_s_},
                    {"batch", opt_.batch},       {"seq", opt_.seq},               {"width", opt_.width},
                    {"heads", opt_.heads},       {"vocab", opt_.vocab},           {"layers", opt_.layers},
                    {"mlp_ratio", opt_.mlp_ratio}, {"large_elems", opt_.large_elems}};
    j["ceilings"] = {{"copy_gbps", copy_gbps_},
                     {"backend_copy_gbps", start_.backend_copy_gbps},
                     {"host_memcpy_gbps", start_.memcpy_gbps},
                     {"copy_bytes", start_.copy_bytes},
                     {"backend_copy_median_us", start_.copy_t.median_us},
                     {"gemm_n", start_.gemm_n},
                     {"gemm_gflops", gemm_gflops_},
                     {"gemm_median_us", start_.gemm_t.median_us},
                     {"end_copy_gbps", std::max(end_.backend_copy_gbps, end_.memcpy_gbps)},
                     {"end_gemm_gflops", end_.gemm_gflops}};
    nlohmann::json rows = nlohmann::json::array();
    for (const Row& r : rows_) {
      rows.push_back({{"section", r.section},
                      {"kernel", r.kernel},
                      {"shape", r.shape},
                      {"formula", r.formula},
                      {"bytes", r.bytes},
                      {"flops", r.flops},
                      {"median_us", r.t.median_us},
                      {"p25_us", r.t.p25_us},
                      {"p75_us", r.t.p75_us},
                      {"min_us", r.t.min_us},
                      {"samples", r.t.samples},
                      {"batch", r.t.batch},
                      {"gbps", r.gbps},
                      {"gflops", r.gflops},
                      {"fraction_of_ceiling", r.fraction},
                      {"ceiling", r.flops > 0 ? "gemm" : "copy"}});
    }
    j["rows"] = rows;
    return j;
  }

 private:
  Device device_;
  Backend& be_;
  Options opt_;
  tg::Rng rng_;
  double target_sample_s_ = 2e-3;
  int min_samples_ = 5;
  std::string section_;
  std::vector<Row> rows_;
  double copy_gbps_ = 0, gemm_gflops_ = 0;  // the ceilings every %ceil uses (start-up measurement)
  Ceilings start_, end_;
};

double d(i64 x) { return static_cast<double>(x); }
std::string dims(std::initializer_list<i64> xs) {  // "2560x128"
  std::string s;
  for (i64 x : xs) {
    if (!s.empty()) s += 'x';
    s += std::to_string(x);
  }
  return s;
}

// The kernels of one section. rows: rows of the [rows, C] activations (batch * seq at the model size);
// `attn_batch`: B of qkv [B, T, 3C]; `head_rows`: rows at the last position (logits); `flat`: elements
// of the flat parameter-sized buffers (reduce_all, Adam).
struct Sizes {
  i64 rows, attn_batch, head_rows, flat;
};

void run_section(Harness& h, const Sizes& z, bool large) {
  const Options& o = h.options();
  Backend& be = h.backend();
  const i64 R = z.rows, C = o.width, T = o.seq, H = o.heads, V = o.vocab, M = o.mlp_ratio * C;
  const i64 B = z.attn_batch, N = z.head_rows;

  {  // copy: reference for this section's typical tensor [R, C]. bytes = 2*R*C*4 (read + write)
    Tensor x = h.random({R, C}), y = h.random({R, C});
    h.row("copy", dims({R, C}), 2 * kF * d(R * C), 0, "2*R*C*4", [&] { be.copy(x, y); });
  }

  {  // layernorm. fwd bytes = (2*R*C + 2*C + 2*R)*4: x in, gamma, beta in, y out, mean, rstd out.
    // bwd bytes = (3*R*C + 3*C + 2*R)*4: dy, x in, gamma in, mean, rstd in, dx out, dgamma, dbeta out.
    Tensor x = h.random({R, C}), gamma = h.random({C}), beta = h.random({C});
    Tensor y = h.random({R, C}), mean = h.random({R}), rstd = h.random({R});
    Tensor dy = h.random({R, C}), dx = h.random({R, C}), dgamma = h.random({C}), dbeta = h.random({C});
    be.layernorm_forward(x, gamma, beta, 1e-5, y, mean, rstd);  // real saved statistics for backward
    h.row("layernorm_forward", dims({R, C}), kF * d(2 * R * C + 2 * C + 2 * R), 0, "(2*R*C + 2*C + 2*R)*4",
          [&] { be.layernorm_forward(x, gamma, beta, 1e-5, y, mean, rstd); });
    h.row("layernorm_backward", dims({R, C}), kF * d(3 * R * C + 3 * C + 2 * R), 0, "(3*R*C + 3*C + 2*R)*4",
          [&] { be.layernorm_backward(dy, x, gamma, mean, rstd, Tensor(), dx, dgamma, dbeta); });
    // Fused residual add in front: fwd bytes = (4*R*C + 2*C + 2*R)*4 (x, residual in; sum, y out);
    // bwd adds dsum in: (4*R*C + 3*C + 2*R)*4.
    Tensor residual = h.random({R, C}), sum = h.random({R, C}), dsum = h.random({R, C});
    h.row("add_layernorm_forward", dims({R, C}), kF * d(4 * R * C + 2 * C + 2 * R), 0, "(4*R*C + 2*C + 2*R)*4",
          [&] { be.add_layernorm_forward(x, residual, gamma, beta, 1e-5, sum, y, mean, rstd); });
    h.row("layernorm_backward +dsum", dims({R, C}), kF * d(4 * R * C + 3 * C + 2 * R), 0, "(4*R*C + 3*C + 2*R)*4",
          [&] { be.layernorm_backward(dy, x, gamma, mean, rstd, dsum, dx, dgamma, dbeta); });
    // Second order: bytes = (5*R*C + 4*C + 2*R)*4: dy, x, gdx in, gamma, gdgamma, gdbeta in, mean, rstd
    // in; ddy, dx out, dgamma out.
    Tensor gdx = h.random({R, C}), gdgamma = h.random({C}), gdbeta = h.random({C}), ddy = h.random({R, C});
    h.row("layernorm_double_backward", dims({R, C}), kF * d(5 * R * C + 4 * C + 2 * R), 0,
          "(5*R*C + 4*C + 2*R)*4",
          [&] { be.layernorm_double_backward(dy, x, gamma, mean, rstd, gdx, gdgamma, gdbeta, ddy, dx, dgamma); });
  }

  {  // attention on qkv [B, T, 3C]. fwd bytes = (B*T*3C + B*T*C + B*H*T*T)*4: qkv in, y and probs out.
    // bwd bytes = (B*T*C + 2*B*T*3C + B*H*T*T)*4: dy, qkv, probs in, dqkv out.
    // flops (not the bound at T=5): fwd ~ 4*B*T*T*C, bwd ~ 8*B*T*T*C (full T*T, no causal halving).
    Tensor qkv = h.random({B, T, 3 * C}, 0.05, 1.0), y = h.random({B, T, C}), probs = h.random({B, H, T, T});
    Tensor dy = h.random({B, T, C}), dqkv = h.random({B, T, 3 * C});
    be.attention_forward(qkv, H, y, probs);
    const std::string shape = fmt::format("qkv {} h{}", dims({B, T, 3 * C}), H);
    h.row("attention_forward", shape, kF * d(B * T * 3 * C + B * T * C + B * H * T * T), 0,
          "(B*T*3C + B*T*C + B*H*T*T)*4", [&] { be.attention_forward(qkv, H, y, probs); });
    h.row("attention_backward", shape, kF * d(B * T * C + 2 * B * T * 3 * C + B * H * T * T), 0,
          "(B*T*C + 2*B*T*3C + B*H*T*T)*4", [&] { be.attention_backward(dy, qkv, probs, H, dqkv); });
    // Second order: bytes = (2*B*T*C + 3*B*T*3C + B*H*T*T)*4: dy, qkv, probs, g in; gqkv, gdy out.
    Tensor g = h.random({B, T, 3 * C}), gdy = h.random({B, T, C});
    h.row("attention_double_backward", shape, kF * d(2 * B * T * C + 3 * B * T * 3 * C + B * H * T * T), 0,
          "(2*B*T*C + 3*B*T*3C + B*H*T*T)*4",
          [&] { be.attention_double_backward(dy, qkv, probs, g, H, dqkv, gdy); });
  }

  {  // MLP activations on [R, 4C]. gelu bytes = 2*n*4; gelu backward bytes = 3*n*4 (x, dy in; dx out).
    // bias add: a [R, 4C] + row-broadcast bias [4C]: bytes = (2*R*4C + 4C)*4.
    // residual add [R, C] + [R, C]: bytes = 3*R*C*4.
    const i64 n = R * M;
    Tensor x = h.random({R, M}, 0.05, 3.0), dy = h.random({R, M}), out = h.random({R, M});
    h.row("gelu", dims({R, M}), 2 * kF * d(n), 0, "2*n*4", [&] { be.unary(tg::UnaryOp::gelu, x, out, 1.0, 0.0); });
    h.row("gelu_backward", dims({R, M}), 3 * kF * d(n), 0, "3*n*4",
          [&] { be.activation_backward(tg::UnaryOp::gelu, x, dy, out); });
    Tensor bias = h.random({M});
    // Fused bias + GELU: fwd bytes = (2*n + M)*4; bwd bytes = (3*n + M)*4 (x, dy, bias in; dx out).
    h.row("bias_gelu_forward", fmt::format("{} + [{}]", dims({R, M}), M), kF * d(2 * n + M), 0, "(2*R*M + M)*4",
          [&] { be.bias_gelu_forward(x, bias, out); });
    h.row("bias_gelu_backward", fmt::format("{} + [{}]", dims({R, M}), M), kF * d(3 * n + M), 0, "(3*R*M + M)*4",
          [&] { be.bias_gelu_backward(x, bias, dy, out); });
    Tensor bias_b = bias.as_strided({R, M}, {0, 1}, bias.offset());
    h.row("add (bias broadcast)", fmt::format("{} + [{}]", dims({R, M}), M), kF * d(2 * n + M), 0, "(2*R*M + M)*4",
          [&] { be.binary(tg::BinaryOp::add, x, bias_b, out); });
    Tensor a = h.random({R, C}), b = h.random({R, C}), c = h.random({R, C});
    h.row("add (residual)", fmt::format("{} + {}", dims({R, C}), dims({R, C})), 3 * kF * d(R * C), 0, "3*R*C*4",
          [&] { be.binary(tg::BinaryOp::add, a, b, c); });
  }

  {  // softmax over the vocabulary on [N, V]. fwd bytes = 2*N*V*4; bwd bytes = 3*N*V*4 (y, dy in; dx out).
    Tensor x = h.random({N, V}, 0.05, 4.0), y = h.random({N, V}), dy = h.random({N, V}), dx = h.random({N, V});
    be.softmax_forward(x, y);
    h.row("softmax_forward", dims({N, V}), 2 * kF * d(N * V), 0, "2*N*V*4", [&] { be.softmax_forward(x, y); });
    h.row("softmax_backward", dims({N, V}), 3 * kF * d(N * V), 0, "3*N*V*4",
          [&] { be.softmax_backward(y, dy, dx); });
  }

  {  // cross-entropy on logits [N, V], targets i32 [N].
    // fwd bytes = N*V*4 + N*4 (targets) + 2*N*4 (losses, lse out).
    // bwd bytes = N*V*4 + N*4 (targets) + N*4 (lse) + 4 (dloss) + N*V*4 (dlogits out).
    // argmax bytes = N*V*4 + N*4 (i32 out).
    Tensor logits = h.random({N, V}, 0.05, 4.0), targets = h.ids({N}, V);
    Tensor losses = h.random({N}), lse = h.random({N}), dloss = h.positive({1}, 0.5, 1.0), dlogits = h.random({N, V});
    Tensor am = h.ids({N}, V);
    Tensor mean = h.random({1});
    be.cross_entropy_forward(logits, targets, losses, lse, mean);
    h.row("cross_entropy_forward", dims({N, V}), kF * d(N * V) + kI * d(N) + 2 * kF * d(N) + kF, 0,
          "N*V*4 + N*4 + 2*N*4 + 4", [&] { be.cross_entropy_forward(logits, targets, losses, lse, mean); });
    h.row("cross_entropy_backward", dims({N, V}), 2 * kF * d(N * V) + kI * d(N) + kF * d(N) + kF, 0,
          "2*N*V*4 + N*4 + N*4 + 4", [&] { be.cross_entropy_backward(logits, targets, lse, dloss, 1.0 / d(N), dlogits); });
    h.row("argmax_lastdim", dims({N, V}), kF * d(N * V) + kI * d(N), 0, "N*V*4 + N*4",
          [&] { be.argmax_lastdim(logits, am); });
  }

  {  // embedding: ids i32 [R] into weight [V, C] -> out [R, C].
    // fwd bytes = R*4 (ids) + min(R, V)*C*4 (each used row of weight read once) + R*C*4 (out).
    // bwd bytes = R*4 (ids) + R*C*4 (dout) + V*C*4 (dweight out).
    Tensor ids = h.ids({R}, V), weight = h.random({V, C}), out = h.random({R, C});
    Tensor dout = h.random({R, C}), dweight = h.random({V, C});
    h.row("embedding_forward", fmt::format("ids[{}] -> {}", R, dims({V, C})),
          kI * d(R) + kF * d(std::min(R, V) * C) + kF * d(R * C), 0, "R*4 + min(R,V)*C*4 + R*C*4",
          [&] { be.embedding_forward(ids, weight, out); });
    h.row("embedding_backward", fmt::format("ids[{}] -> {}", R, dims({V, C})),
          kI * d(R) + kF * d(R * C) + kF * d(V * C), 0, "R*4 + R*C*4 + V*C*4",
          [&] { be.embedding_backward(ids, dout, dweight); });
  }

  {  // reductions. reduce_all bytes = n*4 + 4. reduce_dim (sum over rows, [R, 4C] -> [4C], the bias
    // gradient of the MLP) bytes = (R*4C + 4C)*4.
    Tensor flat = h.random({z.flat}), one = h.random({1});
    h.row("reduce_all sum", fmt::format("[{}]", z.flat), kF * d(z.flat + 1), 0, "(n + 1)*4",
          [&] { be.reduce_all(tg::ReduceOp::sum, flat, one); });
    h.row("reduce_all sum_squares", fmt::format("[{}]", z.flat), kF * d(z.flat + 1), 0, "(n + 1)*4",
          [&] { be.reduce_all(tg::ReduceOp::sum_squares, flat, one); });
    Tensor x = h.random({R, M}), out = h.random({M});
    h.row("reduce_dim sum rows", fmt::format("{} -> [{}]", dims({R, M}), M), kF * d(R * M + M), 0, "(R*M + M)*4",
          [&] { be.reduce_dim(tg::ReduceOp::sum, x, out, 1, R, M); });
  }

  {  // Adam step over the flat parameter buffer, in place: reads p, g, m, v; writes p, m, v. bytes = 7*n*4.
    Tensor p = h.random({z.flat}), g = h.random({z.flat}, 1e-3, 1e-1), m = h.random({z.flat}, 1e-3, 1e-1);
    Tensor v = h.positive({z.flat}, 1e-4, 1e-2);
    tg::AdamStep step;
    step.lr = 1e-6;  // tiny, so thousands of timed steps leave the buffers in range
    step.weight_decay = 1.0;
    step.decoupled_weight_decay = true;
    step.bias_correction1 = 0.5;
    step.bias_correction2 = 0.25;
    h.row("adam_update (AdamW)", fmt::format("[{}]", z.flat), 7 * kF * d(z.flat), 0, "7*n*4",
          [&] { be.adam_update(p, g, m, v, step, tg::GradClip{}); });
    // Clipping by a global norm: on its own (read + write g, bytes = 2*n*4) and fused into the update
    // (the Adam bytes and one more element). Norm 1 and limit 0.999999: every call really scales (a
    // coefficient of ~1 - 2e-6, so thousands of timed calls leave g in range).
    Tensor norm = tg::Tensor::full({1}, 1.0, tg::DType::f32, p.device());
    Tensor g2 = h.random({z.flat}, 1e-3, 1e-1);
    h.row("clip_by_norm", fmt::format("[{}]", z.flat), 2 * kF * d(z.flat), 0, "2*n*4",
          [&] { be.clip_by_norm(g2, norm, 0.999999); });
    h.row("adam_update + clip (fused)", fmt::format("[{}]", z.flat), kF * d(7 * z.flat + 1), 0, "(7*n + 1)*4",
          [&] { be.adam_update(p, g, m, v, step, tg::GradClip{norm, 0.999999}); });
  }

  // GEMMs of the linear layers y = x W^T (+ b), x [rows, in], W [out, in]:
  //   fwd  out[rows,out] = x @ W^T        gemm(x, W, trans_b)
  //   dx   dx[rows,in]   = dy @ W         gemm(dy, W)
  //   dW   dW[out,in]    = dy^T @ x       gemm(dy, x, trans_a)
  // flops = 2*rows*in*out each; bytes = (rows*in + out*in + rows*out)*4 (two operands in, one out).
  struct Linear {
    const char* name;
    i64 rows, in, out;
  };
  std::vector<Linear> linears = {{"in_proj", R, C, 3 * C}, {"mlp.0", R, C, M}, {"mlp.2", R, M, C}};
  if (!large) {
    linears.insert(linears.begin() + 1, Linear{"out_proj", R, C, C});
    linears.push_back(Linear{"head", N, C, V});
  }
  for (const Linear& l : linears) {
    Tensor x = h.random({l.rows, l.in}, 0.05, 1.0), w = h.random({l.out, l.in}, 0.01, 0.1);
    Tensor y = h.random({l.rows, l.out}), dy = h.random({l.rows, l.out}), dx = h.random({l.rows, l.in});
    Tensor dw = h.random({l.out, l.in});
    const double flops = 2.0 * d(l.rows) * d(l.in) * d(l.out);
    const double bytes = kF * d(l.rows * l.in + l.out * l.in + l.rows * l.out);
    const char* formula = "flops 2*rows*in*out; bytes (rows*in + out*in + rows*out)*4";
    h.row(fmt::format("gemm {} fwd", l.name), fmt::format("[{}]@[{}]^T", dims({l.rows, l.in}), dims({l.out, l.in})),
          bytes, flops, formula, [&] { be.gemm(x, w, y, false, true, 1.0, 0.0); });
    h.row(fmt::format("gemm {} dx", l.name), fmt::format("[{}]@[{}]", dims({l.rows, l.out}), dims({l.out, l.in})),
          bytes, flops, formula, [&] { be.gemm(dy, w, dx, false, false, 1.0, 0.0); });
    h.row(fmt::format("gemm {} dW", l.name), fmt::format("[{}]^T@[{}]", dims({l.rows, l.out}), dims({l.rows, l.in})),
          bytes, flops, formula, [&] { be.gemm(dy, x, dw, true, false, 1.0, 0.0); });
  }
}

// Parameters of the model (TransformerConfig layout): token + position embeddings, per layer the
// packed in-projection, out-projection, two layernorms and the MLP, then the final layernorm and a
// bias-free head.
i64 parameter_count(const Options& o) {
  const i64 C = o.width, M = o.mlp_ratio * C, V = o.vocab;
  const i64 per_layer = (3 * C * C + 3 * C) + (C * C + C) + 4 * C + (M * C + M) + (C * M + C);
  return V * C + o.seq * C + o.layers * per_layer + 2 * C + V * C;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  CLI::App app{"tapegrok kernel benchmark: times each backend kernel against measured copy and GEMM ceilings"};
  app.add_option("--device", opt.device, "cpu | cuda | cuda:N | auto")->capture_default_str();
  auto* repeats = app.add_option("--repeats", opt.repeats, "most timed samples per kernel")->capture_default_str();
  auto* warmup = app.add_option("--warmup", opt.warmup, "untimed calls before timing")->capture_default_str();
  app.add_option("--json", opt.json, "also write every row (and the ceilings) to this JSON file");
  app.add_flag("--quick", opt.quick, "few samples and a short time budget per kernel (smoke runs)");
  auto* budget = app.add_option("--budget", opt.budget_s, "seconds of sampling per kernel before stopping early")
                     ->capture_default_str();
  app.add_option("--filter", opt.filter, "only kernels whose name contains this string");
  app.add_option("--sections", opt.sections, "comma-separated: model, large")->capture_default_str();
  app.add_option("--batch", opt.batch, "model batch size")->capture_default_str();
  app.add_option("--seq", opt.seq, "model sequence length")->capture_default_str();
  app.add_option("--width", opt.width, "model width C")->capture_default_str();
  app.add_option("--heads", opt.heads, "attention heads")->capture_default_str();
  app.add_option("--vocab", opt.vocab, "vocabulary size")->capture_default_str();
  app.add_option("--layers", opt.layers, "layers (for the parameter count)")->capture_default_str();
  app.add_option("--large-elems", opt.large_elems, "elements of one tensor in the large section (0: per device)");
  CLI11_PARSE(app, argc, argv);
  if (opt.quick) {
    if (repeats->count() == 0) opt.repeats = 5;
    if (warmup->count() == 0) opt.warmup = 1;
    if (budget->count() == 0) opt.budget_s = 0.05;
  }

  try {
    if (opt.width % opt.heads != 0) throw tg::Error("--width must be a multiple of --heads");
    const Device device = tg::parse_device(opt.device);
    if (opt.large_elems <= 0) {  // 128 MiB per tensor on a GPU; 32 MiB on the CPU (16 MiB with --quick)
      opt.large_elems = device.is_cuda() ? (i64{32} << 20) : (opt.quick ? (i64{4} << 20) : (i64{8} << 20));
    }
    Harness h(device, opt);

    std::string desc = device.str();
    if (device.is_cpu()) {
      desc = fmt::format("cpu ({}, {} hardware threads; kernels single-threaded, GEMM via OpenBLAS)", cpu_model_name(),
                         std::thread::hardware_concurrency());
      const std::string load = load_average();
      if (!load.empty()) desc += fmt::format(" | load average {} at start", load);
    }
    const std::string date = now_string();
    fmt::print("tapegrok kernel benchmark | device {} | {} | build {} ({})\n", desc, date, TAPEGROK_BUILD_TYPE,
               TAPEGROK_COMPILER);
    fmt::print("timing: median of up to {} samples ({} s budget per kernel) after {} warm-up calls; a sample is a batch\n"
               "        of back-to-back calls + synchronize, divided by the batch (samples column: count x batch)\n",
               opt.repeats, opt.budget_s, opt.warmup);
    fmt::print("%ceil: GB/s over the copy ceiling, or GFLOP/s over the GEMM ceiling for gemm rows; spread: IQR/median\n");
    std::fflush(stdout);

    h.measure_ceilings();
    h.print_ceilings();

    const i64 rows = opt.batch * opt.seq;
    const i64 params = parameter_count(opt);
    if (h.section_enabled("model")) {
      h.begin_section("model", fmt::format("batch {}, seq {}, C {}, {} heads, vocab {}, MLP {}; {} parameters",
                                           opt.batch, opt.seq, opt.width, opt.heads, opt.vocab,
                                           opt.mlp_ratio * opt.width, params));
      run_section(h, Sizes{rows, opt.batch, opt.batch, params}, false);
    }
    if (h.section_enabled("large")) {
      // Scale rows so that the [rows, C] activation holds large_elems elements; the MLP, logits and qkv
      // tensors scale alike (qkv [B, T, 3C] ~ large_elems, logits [N, V] ~ large_elems).
      const i64 E = opt.large_elems, C = opt.width;
      const Sizes z{E / C, std::max<i64>(1, E / (opt.seq * 3 * C)), std::max<i64>(1, E / opt.vocab), E};
      h.begin_section("large", fmt::format("~{} per tensor ({} f32): rows {}, attention batch {}, logits rows {}",
                                           mib(kF * d(E)), E, z.rows, z.attn_batch, z.head_rows));
      run_section(h, z, true);
    }

    h.recheck_ceilings();
    if (!opt.json.empty()) {
      std::ofstream out(opt.json);
      if (!out) throw tg::Error(fmt::format("cannot write {}", opt.json));
      out << h.to_json(desc, date).dump(2) << "\n";
      fmt::print("\nwrote {}\n", opt.json);
    }
  } catch (const std::exception& e) {
    fmt::print(stderr, "tapegrok_bench_kernels: {}\n", e.what());
    return 1;
  }
  return 0;
}
