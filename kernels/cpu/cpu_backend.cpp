#include "kernels/cpu/cpu_backend.h"

#include <fmt/format.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "engine/error.h"
#include "kernels/cpu/dispatch.h"
#include "kernels/cpu/kernels.h"

namespace tg::cpu {

namespace {

// Any size (exact sizes under TAPEGROK_EXACT_ALLOC), which std::aligned_alloc does not allow.
void* raw_alloc(std::size_t nbytes) {
  void* p = nullptr;
  return posix_memalign(&p, 256, nbytes) == 0 ? p : nullptr;
}
void raw_free(void* p) { std::free(p); }

// The norm of a GradClip, or null when it clips nothing.
template <class T> const T* clip_norm(const GradClip& clip) { return clip.norm.defined() ? ptr<const T>(clip.norm) : nullptr; }

class CpuBackend final : public Backend {
 public:
  const char* name() const override { return "cpu"; }
  Allocator& allocator() override { return allocator_; }
  void synchronize() override {}

  void copy_from_host(void* dst, const void* src, std::size_t nbytes) override { std::memcpy(dst, src, nbytes); }
  void copy_to_host(void* dst, const void* src, std::size_t nbytes) override { std::memcpy(dst, src, nbytes); }
  void copy_from_host_async(void* dst, const void* src, std::size_t nbytes) override { std::memcpy(dst, src, nbytes); }
  void fill_bytes(void* dst, unsigned char byte, std::size_t nbytes) override { std::memset(dst, byte, nbytes); }

  void fill(const Tensor& out, double value) override {
    const StridedView v = strided_view(out);
    if (out.dtype() == DType::i32) return cpu::fill(ptr<std::int32_t>(out), v, static_cast<std::int32_t>(value));
    dispatch_floating(out.dtype(), "fill", [&](auto t) {
      using T = decltype(t);
      cpu::fill(ptr<T>(out), v, static_cast<T>(value));
    });
  }

  void copy(const Tensor& src, const Tensor& dst) override {
    const StridedView sv = strided_view(src), dv = strided_view(dst);
    if (src.dtype() == DType::i32) return cpu::copy(ptr<std::int32_t>(src), sv, ptr<std::int32_t>(dst), dv);
    dispatch_floating(src.dtype(), "copy", [&](auto t) {
      using T = decltype(t);
      cpu::copy(ptr<T>(src), sv, ptr<T>(dst), dv);
    });
  }

  void convert(const Tensor& src, const Tensor& dst) override {
    if (src.dtype() == DType::f32 && dst.dtype() == DType::f64) {
      cpu::convert(ptr<float>(src), ptr<double>(dst), src.numel());
    } else if (src.dtype() == DType::f64 && dst.dtype() == DType::f32) {
      cpu::convert(ptr<double>(src), ptr<float>(dst), src.numel());
    } else {
      throw Error(fmt::format("convert: {} to {} is not supported", dtype_name(src.dtype()), dtype_name(dst.dtype())));
    }
  }

  void gemm(const Tensor& a, const Tensor& b, const Tensor& out, bool ta, bool tb, double alpha,
            double beta) override {
    const std::int64_t r = a.dim();
    const std::int64_t batch = r == 3 ? a.size(0) : 1;
    const std::int64_t m = out.size(r - 2), n = out.size(r - 1);
    const std::int64_t k = ta ? a.size(r - 2) : a.size(r - 1);
    dispatch_floating(a.dtype(), "gemm", [&](auto t) {
      using T = decltype(t);
      cpu::gemm(ptr<T>(a), ptr<T>(b), ptr<T>(out), batch, m, n, k, ta, tb, static_cast<T>(alpha),
                static_cast<T>(beta));
    });
  }

  void unary(UnaryOp op, const Tensor& x, const Tensor& out, double alpha, double beta) override {
    dispatch_floating(x.dtype(), unary_op_name(op), [&](auto t) {
      using T = decltype(t);
      cpu::unary(op, ptr<T>(x), ptr<T>(out), x.numel(), static_cast<T>(alpha), static_cast<T>(beta));
    });
  }

  void activation_backward(UnaryOp act, const Tensor& x, const Tensor& dy, const Tensor& dx) override {
    dispatch_floating(x.dtype(), "activation_backward", [&](auto t) {
      using T = decltype(t);
      cpu::activation_backward(act, ptr<T>(x), ptr<T>(dy), ptr<T>(dx), x.numel());
    });
  }

  void bias_gelu_forward(const Tensor& x, const Tensor& bias, const Tensor& y) override {
    dispatch_floating(x.dtype(), "bias_gelu", [&](auto t) {
      using T = decltype(t);
      cpu::bias_gelu_forward(ptr<T>(x), ptr<T>(bias), ptr<T>(y), x.size(0), x.size(1));
    });
  }

  void bias_gelu_backward(const Tensor& x, const Tensor& bias, const Tensor& dy, const Tensor& dx) override {
    dispatch_floating(x.dtype(), "bias_gelu_backward", [&](auto t) {
      using T = decltype(t);
      cpu::bias_gelu_backward(ptr<T>(x), ptr<T>(bias), ptr<T>(dy), ptr<T>(dx), x.size(0), x.size(1));
    });
  }

  void binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) override {
    const StridedView av = strided_view(a), bv = strided_view(b);
    dispatch_floating(out.dtype(), binary_op_name(op), [&](auto t) {
      using T = decltype(t);
      cpu::binary(op, ptr<T>(a), av, ptr<T>(b), bv, ptr<T>(out), out.numel());
    });
  }

  void reduce_dim(ReduceOp op, const Tensor& x, const Tensor& out, std::int64_t outer, std::int64_t reduce,
                  std::int64_t inner) override {
    dispatch_floating(x.dtype(), "reduce_dim", [&](auto t) {
      using T = decltype(t);
      cpu::reduce_dim(op, ptr<T>(x), ptr<T>(out), outer, reduce, inner);
    });
  }

  void reduce_all(ReduceOp op, const Tensor& x, const Tensor& out) override {
    dispatch_floating(x.dtype(), "reduce_all", [&](auto t) {
      using T = decltype(t);
      cpu::reduce_all(op, ptr<T>(x), ptr<T>(out), x.numel());
    });
  }

  void argmax_lastdim(const Tensor& x, const Tensor& out) override {
    dispatch_floating(x.dtype(), "argmax", [&](auto t) {
      using T = decltype(t);
      cpu::argmax_lastdim(ptr<T>(x), ptr<std::int32_t>(out), x.size(0), x.size(1));
    });
  }

  void count_equal(const Tensor& a, const Tensor& b, const Tensor& out) override {
    dispatch_floating(out.dtype(), "count_equal", [&](auto t) {
      using T = decltype(t);
      cpu::count_equal(ptr<std::int32_t>(a), ptr<std::int32_t>(b), ptr<T>(out), a.numel());
    });
  }

  void adam_update(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v, const AdamStep& step,
                   const GradClip& clip) override {
    dispatch_floating(param.dtype(), "adam_update", [&](auto t) {
      using T = decltype(t);
      cpu::adam_update(ptr<T>(param), ptr<T>(grad), ptr<T>(m), ptr<T>(v), param.numel(), step, clip_norm<T>(clip),
                       static_cast<T>(clip.max_norm));
    });
  }

  void sgd_update(const Tensor& param, const Tensor& grad, const Tensor& buf, double lr, double momentum,
                  double weight_decay, bool first_step, const GradClip& clip) override {
    dispatch_floating(param.dtype(), "sgd_update", [&](auto t) {
      using T = decltype(t);
      cpu::sgd_update(ptr<T>(param), ptr<T>(grad), buf.defined() ? ptr<T>(buf) : nullptr, param.numel(),
                      static_cast<T>(lr), static_cast<T>(momentum), static_cast<T>(weight_decay), first_step,
                      clip_norm<T>(clip), static_cast<T>(clip.max_norm));
    });
  }

  void adam_update_device(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v,
                          const AdamStep& fixed, const Tensor& scalars, const GradClip& clip) override {
    dispatch_floating(param.dtype(), "adam_update_device", [&](auto t) {
      using T = decltype(t);
      cpu::adam_update_device(ptr<T>(param), ptr<T>(grad), ptr<T>(m), ptr<T>(v), param.numel(), fixed,
                              ptr<const T>(scalars), clip_norm<T>(clip), static_cast<T>(clip.max_norm));
    });
  }

  void sgd_update_device(const Tensor& param, const Tensor& grad, const Tensor& buf, const Tensor& scalars,
                         double momentum, double weight_decay, const GradClip& clip) override {
    dispatch_floating(param.dtype(), "sgd_update_device", [&](auto t) {
      using T = decltype(t);
      cpu::sgd_update_device(ptr<T>(param), ptr<T>(grad), buf.defined() ? ptr<T>(buf) : nullptr, param.numel(),
                             ptr<const T>(scalars), static_cast<T>(momentum), static_cast<T>(weight_decay),
                             clip_norm<T>(clip), static_cast<T>(clip.max_norm));
    });
  }

  void clip_by_norm(const Tensor& x, const Tensor& norm, double max_norm) override {
    dispatch_floating(x.dtype(), "clip_by_norm", [&](auto t) {
      using T = decltype(t);
      cpu::clip_by_norm(ptr<T>(x), x.numel(), ptr<T>(norm)[0], static_cast<T>(max_norm));
    });
  }

  void segmented_reduce(ReduceOp op, const Tensor& x, const std::vector<std::int64_t>& offsets,
                        const Tensor& out) override {
    dispatch_floating(x.dtype(), "segmented_reduce", [&](auto t) {
      using T = decltype(t);
      cpu::segmented_reduce(op, ptr<T>(x), offsets.data(), static_cast<std::int64_t>(offsets.size()) - 1, ptr<T>(out));
    });
  }

  void segmented_scale(const Tensor& x, const std::vector<std::int64_t>& offsets, const Tensor& scales) override {
    dispatch_floating(x.dtype(), "segmented_scale", [&](auto t) {
      using T = decltype(t);
      cpu::segmented_scale(ptr<T>(x), offsets.data(), static_cast<std::int64_t>(offsets.size()) - 1, ptr<T>(scales));
    });
  }

  void softmax_forward(const Tensor& x, const Tensor& y) override {
    dispatch_floating(x.dtype(), "softmax", [&](auto t) {
      using T = decltype(t);
      cpu::softmax_forward(ptr<T>(x), ptr<T>(y), x.size(0), x.size(1));
    });
  }

  void softmax_backward(const Tensor& y, const Tensor& dy, const Tensor& dx) override {
    dispatch_floating(y.dtype(), "softmax_backward", [&](auto t) {
      using T = decltype(t);
      cpu::softmax_backward(ptr<T>(y), ptr<T>(dy), ptr<T>(dx), y.size(0), y.size(1));
    });
  }

  void layernorm_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps, const Tensor& y,
                         const Tensor& mean, const Tensor& rstd) override {
    dispatch_floating(x.dtype(), "layernorm", [&](auto t) {
      using T = decltype(t);
      cpu::layernorm_forward(ptr<T>(x), ptr<T>(gamma), ptr<T>(beta), static_cast<T>(eps), ptr<T>(y), ptr<T>(mean),
                             ptr<T>(rstd), x.size(0), x.size(1));
    });
  }

  void add_layernorm_forward(const Tensor& x, const Tensor& residual, const Tensor& gamma, const Tensor& beta,
                             double eps, const Tensor& sum, const Tensor& y, const Tensor& mean,
                             const Tensor& rstd) override {
    dispatch_floating(x.dtype(), "add_layernorm", [&](auto t) {
      using T = decltype(t);
      cpu::add_layernorm_forward(ptr<T>(x), ptr<T>(residual), ptr<T>(gamma), ptr<T>(beta), static_cast<T>(eps),
                                 ptr<T>(sum), ptr<T>(y), ptr<T>(mean), ptr<T>(rstd), x.size(0), x.size(1));
    });
  }

  void layernorm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& mean,
                          const Tensor& rstd, const Tensor& dsum, const Tensor& dx, const Tensor& dgamma,
                          const Tensor& dbeta) override {
    dispatch_floating(x.dtype(), "layernorm_backward", [&](auto t) {
      using T = decltype(t);
      cpu::layernorm_backward(ptr<T>(dy), ptr<T>(x), ptr<T>(gamma), ptr<T>(mean), ptr<T>(rstd),
                              dsum.defined() ? ptr<T>(dsum) : nullptr, ptr<T>(dx), ptr<T>(dgamma), ptr<T>(dbeta),
                              x.size(0), x.size(1));
    });
  }

  void layernorm_double_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& mean,
                                 const Tensor& rstd, const Tensor& gdx, const Tensor& gdgamma, const Tensor& gdbeta,
                                 const Tensor& ddy, const Tensor& dx, const Tensor& dgamma) override {
    dispatch_floating(x.dtype(), "layernorm_double_backward", [&](auto t) {
      using T = decltype(t);
      cpu::layernorm_double_backward(ptr<T>(dy), ptr<T>(x), ptr<T>(gamma), ptr<T>(mean), ptr<T>(rstd), ptr<T>(gdx),
                                     ptr<T>(gdgamma), ptr<T>(gdbeta), ptr<T>(ddy), ptr<T>(dx), ptr<T>(dgamma),
                                     x.size(0), x.size(1));
    });
  }

  void attention_forward(const Tensor& qkv, std::int64_t n_heads, const Tensor& y, const Tensor& probs) override {
    dispatch_floating(qkv.dtype(), "attention", [&](auto t) {
      using T = decltype(t);
      cpu::attention_forward(ptr<T>(qkv), ptr<T>(y), ptr<T>(probs), qkv.size(0), qkv.size(1), qkv.size(2) / 3,
                             n_heads);
    });
  }

  void attention_backward(const Tensor& dy, const Tensor& qkv, const Tensor& probs, std::int64_t n_heads,
                          const Tensor& dqkv) override {
    dispatch_floating(qkv.dtype(), "attention_backward", [&](auto t) {
      using T = decltype(t);
      cpu::attention_backward(ptr<T>(dy), ptr<T>(qkv), ptr<T>(probs), ptr<T>(dqkv), qkv.size(0), qkv.size(1),
                              qkv.size(2) / 3, n_heads);
    });
  }

  void attention_double_backward(const Tensor& dy, const Tensor& qkv, const Tensor& probs, const Tensor& g,
                                 std::int64_t n_heads, const Tensor& gqkv, const Tensor& gdy) override {
    dispatch_floating(qkv.dtype(), "attention_double_backward", [&](auto t) {
      using T = decltype(t);
      cpu::attention_double_backward(ptr<T>(dy), ptr<T>(qkv), ptr<T>(probs), ptr<T>(g), ptr<T>(gqkv), ptr<T>(gdy),
                                     qkv.size(0), qkv.size(1), qkv.size(2) / 3, n_heads);
    });
  }

  void embedding_forward(const Tensor& ids, const Tensor& weight, const Tensor& out) override {
    dispatch_floating(weight.dtype(), "embedding", [&](auto t) {
      using T = decltype(t);
      cpu::embedding_forward(ptr<std::int32_t>(ids), ptr<T>(weight), ptr<T>(out), ids.numel(), weight.size(1));
    });
  }

  void embedding_backward(const Tensor& ids, const Tensor& dout, const Tensor& dweight) override {
    dispatch_floating(dout.dtype(), "embedding_backward", [&](auto t) {
      using T = decltype(t);
      cpu::embedding_backward(ptr<std::int32_t>(ids), ptr<T>(dout), ptr<T>(dweight), ids.numel(), dweight.size(0),
                              dweight.size(1));
    });
  }

  void cross_entropy_forward(const Tensor& logits, const Tensor& targets, const Tensor& losses, const Tensor& lse,
                             const Tensor& mean) override {
    dispatch_floating(logits.dtype(), "cross_entropy", [&](auto t) {
      using T = decltype(t);
      cpu::cross_entropy_forward(ptr<T>(logits), ptr<std::int32_t>(targets), ptr<T>(losses), ptr<T>(lse), ptr<T>(mean),
                                 logits.size(0), logits.size(1));
    });
  }

  void cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& lse, const Tensor& dloss,
                              double scale, const Tensor& dlogits) override {
    dispatch_floating(logits.dtype(), "cross_entropy_backward", [&](auto t) {
      using T = decltype(t);
      const T factor = static_cast<T>(ptr<T>(dloss)[0] * scale);
      cpu::cross_entropy_backward(ptr<T>(logits), ptr<std::int32_t>(targets), ptr<T>(lse), factor, ptr<T>(dlogits),
                                  logits.size(0), logits.size(1));
    });
  }

  void stablemax_cross_entropy_forward(const Tensor& logits, const Tensor& targets, const Tensor& losses,
                                       const Tensor& sums, const Tensor& mean) override {
    dispatch_floating(logits.dtype(), "stablemax_cross_entropy", [&](auto t) {
      using T = decltype(t);
      cpu::stablemax_cross_entropy_forward(ptr<T>(logits), ptr<std::int32_t>(targets), ptr<T>(losses), ptr<T>(sums),
                                           ptr<T>(mean), logits.size(0), logits.size(1));
    });
  }

  void stablemax_cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& sums,
                                        const Tensor& dloss, double scale, const Tensor& dlogits) override {
    dispatch_floating(logits.dtype(), "stablemax_cross_entropy_backward", [&](auto t) {
      using T = decltype(t);
      const T factor = static_cast<T>(ptr<T>(dloss)[0] * scale);
      cpu::stablemax_cross_entropy_backward(ptr<T>(logits), ptr<std::int32_t>(targets), ptr<T>(sums), factor,
                                            ptr<T>(dlogits), logits.size(0), logits.size(1));
    });
  }

  // CUDA graphs: the CPU runs every step eagerly (a sync-free step needs no graph here).
  void begin_capture() override { throw Error(no_graphs()); }
  std::uint64_t end_capture() override { throw Error(no_graphs()); }
  void abort_capture() noexcept override {}
  void launch_graph(std::uint64_t) override { throw Error(no_graphs()); }
  void destroy_graph(std::uint64_t) override {}

 private:
  static std::string no_graphs() {
    return "graph capture needs a CUDA device (the CPU backend runs every op eagerly; use --device cuda)";
  }

  CachingAllocator allocator_{"cpu", raw_alloc, raw_free};
};

}  // namespace

Backend& backend() {
  static CpuBackend* instance = new CpuBackend();  // never destroyed: static tensors may outlive main()
  return *instance;
}

}  // namespace tg::cpu
