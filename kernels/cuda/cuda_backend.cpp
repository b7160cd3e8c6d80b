// The CUDA backend: unpacks tensors into raw pointers and sizes, calls the launchers of
// kernels/cuda/launch.cuh on the backend's own stream, and turns every CUDA and cuBLAS failure into
// a tg::Error naming the kernel, the tensors and the CUDA error.
//
// One non-blocking stream per GPU carries every kernel, copy and cuBLAS call, so stream order makes
// it safe for the caching allocator to hand a block freed on the host to the next kernel. Scratch
// buffers (CUB temporaries, two-stage reduction partials) come from the same allocator.
//
// CUDA graphs (begin_capture ... end_capture, kernels/cuda/cuda_graph.h): while the stream is being
// captured every allocation, scratch included, comes from the graph's capture pool (engine/allocator.h),
// cuBLAS works in a fixed workspace set at creation (so it never allocates during a capture), and the
// calls that wait for the device refuse to run with an error naming them.
#include "kernels/cuda/cuda_backend.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "engine/error.h"
#include "kernels/cuda/cuda_graph.h"
#include "kernels/cuda/cuda_runtime_query.h"
#include "kernels/cuda/gpu_context.h"
#include "kernels/cuda/host_staging.h"
#include "kernels/cuda/launch.cuh"

namespace tg::cuda {

namespace {

// ---------------------------------------------------------------- error text

std::string cuda_error_text(cudaError_t err) {
  return fmt::format("{} ({})", cudaGetErrorString(err), cudaGetErrorName(err));
}

// Kernel faults surface at a later CUDA call; say so unless the error is about the call itself.
const char* async_hint(cudaError_t err) {
  switch (err) {
    case cudaErrorInvalidValue:
    case cudaErrorInvalidConfiguration:
    case cudaErrorLaunchOutOfResources:
    case cudaErrorInvalidDeviceFunction:
    case cudaErrorNoKernelImageForDevice:
    case cudaErrorMemoryAllocation:
    case cudaErrorInvalidDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorNoDevice:
      return "";
    default:
      return " [kernels run asynchronously, so an earlier kernel may have caused this; run with "
             "CUDA_LAUNCH_BLOCKING=1 to find it]";
  }
}

const char* cublas_status_text(cublasStatus_t status) { return cublasGetStatusString(status); }
const char* cublas_status_name(cublasStatus_t status) { return cublasGetStatusName(status); }

// ---------------------------------------------------------------- raw device memory

void* raw_alloc(std::size_t nbytes) {
  // During a graph capture (thread-local mode) cudaMalloc counts as unsafe on this thread: it is not
  // recorded in the graph. Here that is intended (the block joins the capture pool, which keeps it for
  // the graph's lifetime), so this one call runs in relaxed mode.
  cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
  cudaError_t swapped = cudaThreadExchangeStreamCaptureMode(&mode);
  if (swapped != cudaSuccess) {
    throw Error(fmt::format("cudaThreadExchangeStreamCaptureMode failed before a cudaMalloc of {} bytes: {}", nbytes,
                            cuda_error_text(swapped)));
  }
  void* ptr = nullptr;
  const cudaError_t err = cudaMalloc(&ptr, nbytes);
  swapped = cudaThreadExchangeStreamCaptureMode(&mode);  // back to the thread's mode
  if (swapped != cudaSuccess) {
    throw Error(fmt::format("cudaThreadExchangeStreamCaptureMode failed after a cudaMalloc of {} bytes: {}", nbytes,
                            cuda_error_text(swapped)));
  }
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();  // clear it: the caching allocator frees its cache, retries, then reports
    return nullptr;
  }
  if (err != cudaSuccess) {
    throw Error(fmt::format("cudaMalloc of {} bytes failed: {}{}", nbytes, cuda_error_text(err), async_hint(err)));
  }
  return ptr;
}

void raw_free(void* ptr) {
  // Only reached when the cache is emptied (out-of-memory retry). A kernel still in flight may use
  // the block: finish all work first. Errors here cannot be acted on; clear them.
  if (cudaDeviceSynchronize() != cudaSuccess) cudaGetLastError();
  if (cudaFree(ptr) != cudaSuccess) cudaGetLastError();
}

// ---------------------------------------------------------------- tensor arguments

// The kernels' view of a tensor (engine/tensor.h's kernel_layout, the CPU backend's too), copied
// into launch.cuh's Layout, which the .cu files see without engine headers.
static_assert(kMaxDims == kMaxKernelDims, "launch.cuh's Layout must hold every KernelLayout");
Layout make_layout(const char* op, const Tensor& t) {
  const KernelLayout k = kernel_layout(t, op);
  Layout v;
  v.rank = k.rank;
  for (int d = 0; d < k.rank; ++d) {
    v.shape[d] = k.shape[d];
    v.strides[d] = k.strides[d];
  }
  return v;
}

// How an elementwise kernel reads (or writes) a tensor of the output's logical shape.
Operand make_operand(const char* op, const Tensor& t) {
  Operand o;
  o.layout = make_layout(op, t);
  const Layout& l = o.layout;
  if (l.rank == 0 || (l.rank == 1 && l.strides[0] == 0)) {
    o.access = Access::scalar;
  } else if (l.rank == 1 && l.strides[0] == 1) {
    o.access = Access::flat;
  } else if (l.rank == 2 && l.strides[0] == 0 && l.strides[1] == 1) {
    o.access = Access::row;
    o.row_length = l.shape[1];
  } else {
    o.access = Access::strided;
  }
  return o;
}

// UnaryCode (launch.cuh) mirrors UnaryOp so that the .cu files need no engine headers. These two
// switches make any drift a compile error: each must name every enumerator of its own enum (-Wswitch
// is an error here) and maps it to the one of the same name in the other, which must therefore exist.
// unary_codes_match then checks that every pair also has the same value (and so the same count).
#pragma GCC diagnostic push
#pragma GCC diagnostic error "-Wswitch"
constexpr int kNotAnEnumerator = -1;
constexpr UnaryCode unary_code(UnaryOp op) {
  switch (op) {
    case UnaryOp::neg: return UnaryCode::neg;
    case UnaryOp::exp: return UnaryCode::exp;
    case UnaryOp::log: return UnaryCode::log;
    case UnaryOp::abs: return UnaryCode::abs;
    case UnaryOp::sqrt: return UnaryCode::sqrt;
    case UnaryOp::square: return UnaryCode::square;
    case UnaryOp::sign: return UnaryCode::sign;
    case UnaryOp::relu: return UnaryCode::relu;
    case UnaryOp::gelu: return UnaryCode::gelu;
    case UnaryOp::gelu_grad2: return UnaryCode::gelu_grad2;
    case UnaryOp::affine: return UnaryCode::affine;
  }
  return static_cast<UnaryCode>(kNotAnEnumerator);
}
constexpr UnaryOp unary_op_of(UnaryCode code) {
  switch (code) {
    case UnaryCode::neg: return UnaryOp::neg;
    case UnaryCode::exp: return UnaryOp::exp;
    case UnaryCode::log: return UnaryOp::log;
    case UnaryCode::abs: return UnaryOp::abs;
    case UnaryCode::sqrt: return UnaryOp::sqrt;
    case UnaryCode::square: return UnaryOp::square;
    case UnaryCode::sign: return UnaryOp::sign;
    case UnaryCode::relu: return UnaryOp::relu;
    case UnaryCode::gelu: return UnaryOp::gelu;
    case UnaryCode::gelu_grad2: return UnaryOp::gelu_grad2;
    case UnaryCode::affine: return UnaryOp::affine;
  }
  return static_cast<UnaryOp>(kNotAnEnumerator);
}
#pragma GCC diagnostic pop
// Both enums count from 0 without gaps, so the values 0..63 hold every enumerator: each value names an
// enumerator in both enums or in neither, and the two switches map it to itself.
constexpr bool unary_codes_match() {
  int count = 0;
  for (int v = 0; v < 64; ++v) {
    const int code = static_cast<int>(unary_code(static_cast<UnaryOp>(v)));
    const int op = static_cast<int>(unary_op_of(static_cast<UnaryCode>(v)));
    if (code != op || (code != v && code != kNotAnEnumerator)) return false;
    if (code == v) ++count;
  }
  return count > 0;
}
static_assert(unary_codes_match(), "UnaryCode (launch.cuh) must have UnaryOp's enumerators, with their values");

ReduceCode reduce_code(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum: return ReduceCode::sum;
    case ReduceOp::sum_squares: return ReduceCode::sum_squares;
    case ReduceOp::abs_entropy: return ReduceCode::abs_entropy;
  }
  throw Error("cuda kernel reduce: unknown reduce op");
}

BinaryCode binary_code(BinaryOp op) {
  switch (op) {
    case BinaryOp::add: return BinaryCode::add;
    case BinaryOp::sub: return BinaryCode::sub;
    case BinaryOp::mul: return BinaryCode::mul;
    case BinaryOp::div: return BinaryCode::div;
  }
  throw Error("cuda kernel binary: unknown binary op");
}

// ---------------------------------------------------------------- the backend

class CudaBackend final : public Backend, public GpuContext {
 public:
  explicit CudaBackend(int index)
      : index_(index), name_(fmt::format("cuda:{}", index)), allocator_(name_, raw_alloc, raw_free) {
    activate();
    int optin = 0;
    check_call(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, index_),
               "cudaDeviceGetAttribute(MaxSharedMemoryPerBlockOptin)");
    check_call(configure_kernels(optin, limits_), "configure_kernels (cudaFuncSetAttribute)");
    check_call(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
    check_cublas(cublasCreate(&cublas_), "cublasCreate", {});
    check_cublas(cublasSetStream(cublas_, stream_), "cublasSetStream", {});
    // A fixed workspace, so cuBLAS never allocates while a graph is captured. Set after cublasSetStream,
    // which resets the workspace to cuBLAS's own pool. Sizes: cuBLAS's recommendation (32 MiB on Hopper
    // and later, 4 MiB before).
    int major = 0;
    check_call(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, index_),
               "cudaDeviceGetAttribute(ComputeCapabilityMajor)");
    const std::size_t workspace_bytes = major >= 9 ? std::size_t{32} << 20 : std::size_t{4} << 20;
    check_call(cudaMalloc(&cublas_workspace_, workspace_bytes), "cudaMalloc (cuBLAS workspace)");
    check_cublas(cublasSetWorkspace(cublas_, cublas_workspace_, workspace_bytes), "cublasSetWorkspace", {});
    // Plain FP32 arithmetic (no TF32), so products stay within float rounding of the float64 reference.
    check_cublas(cublasSetMathMode(cublas_, CUBLAS_DEFAULT_MATH), "cublasSetMathMode", {});
  }
  // Never destroyed (see backend()): no destructor releases the stream or the handle.

  const char* name() const override { return name_.c_str(); }

  Allocator& allocator() override {
    activate();  // cudaMalloc allocates on the current device
    return allocator_;
  }

  // GpuContext (gpu_context.h), through which the method kernels launch on this GPU's stream; activate,
  // prepare, check_call and check_kernel below serve both.
  int index() const override { return index_; }
  cudaStream_t stream() const override { return stream_; }
  CachingAllocator& caching_allocator() override {
    activate();
    return allocator_;
  }

  void synchronize() override {
    refuse_during_capture("synchronize");
    activate();
    check_call(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
  }

  // ---- memory

  void copy_from_host(void* dst, const void* src, std::size_t nbytes) override {
    if (nbytes == 0) return;
    refuse_during_capture("copy_from_host");
    activate();
    check_copy(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyHostToDevice, stream_), "copy_from_host", nbytes);
    check_copy(cudaStreamSynchronize(stream_), "copy_from_host", nbytes);
  }

  void copy_from_host_async(void* dst, const void* src, std::size_t nbytes) override {
    if (nbytes == 0) return;
    refuse_during_capture("copy_from_host_async");
    activate();
    const char* call = "";
    check_copy(staging_.upload(dst, src, nbytes, stream_, call), call, nbytes);
  }

  void copy_to_host(void* dst, const void* src, std::size_t nbytes) override {
    if (nbytes == 0) return;
    refuse_during_capture("copy_to_host (a read of device values on the host)");
    activate();
    check_copy(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToHost, stream_), "copy_to_host", nbytes);
    check_copy(cudaStreamSynchronize(stream_), "copy_to_host", nbytes);
  }

  void fill_bytes(void* dst, unsigned char byte, std::size_t nbytes) override {
    if (nbytes == 0) return;
    activate();
    check_copy(cudaMemsetAsync(dst, byte, nbytes, stream_), "fill_bytes", nbytes);
  }

  void fill(const Tensor& out, double value) override {
    const Args args = {{"out", out, Want::word, false}};
    prepare("fill", args);
    std::uint32_t bits = 0;
    if (out.dtype() == DType::i32) {
      const auto v = static_cast<std::int32_t>(value);
      std::memcpy(&bits, &v, sizeof bits);
    } else {
      const auto v = static_cast<float>(value);
      std::memcpy(&bits, &v, sizeof bits);
    }
    check_kernel(launch_fill(ptr<std::uint32_t>(out), make_operand("fill", out), bits, out.numel(), stream_), "fill",
                 args);
  }

  void copy(const Tensor& src, const Tensor& dst) override {
    const Args args = {{"src", src, Want::word, false}, {"dst", dst, Want::word, false}};
    prepare("copy", args);
    TG_CHECK(src.dtype() == dst.dtype() && src.numel() == dst.numel(), "cuda kernel copy: {} does not match {}",
             src.str(), dst.str());
    check_kernel(launch_copy(ptr<const std::uint32_t>(src), make_operand("copy", src), ptr<std::uint32_t>(dst),
                             make_operand("copy", dst), dst.numel(), stream_),
                 "copy", args);
  }

  void convert(const Tensor& src, const Tensor& dst) override {
    const Args args = {{"src", src, Want::word}, {"dst", dst, Want::word}};
    prepare("convert", args);
    throw Error(fmt::format("cuda kernel convert: {} to {} is not supported on the GPU ({} -> {})",
                            dtype_name(src.dtype()), dtype_name(dst.dtype()), src.str(), dst.str()));
  }

  // ---- dense algebra

  void gemm(const Tensor& a, const Tensor& b, const Tensor& out, bool ta, bool tb, double alpha,
            double beta) override {
    const Args args = {{"a", a}, {"b", b}, {"out", out}};
    prepare("gemm", args);
    const std::int64_t r = a.dim();
    TG_CHECK((r == 2 || r == 3) && b.dim() == r && out.dim() == r, "cuda kernel gemm: unsupported ranks ({})",
             describe(args));
    const std::int64_t batch = r == 3 ? a.size(0) : 1;
    const std::int64_t m = out.size(r - 2), n = out.size(r - 1);
    const std::int64_t k = ta ? a.size(r - 2) : a.size(r - 1);
    if (batch == 0 || m == 0 || n == 0) return;
    TG_CHECK(m <= INT_MAX && n <= INT_MAX && k <= INT_MAX && batch <= INT_MAX,
             "cuda kernel gemm: dimensions exceed cuBLAS's int range ({})", describe(args));
    const float al = static_cast<float>(alpha), be = static_cast<float>(beta);
    // Row-major out = op(a) op(b) is column-major out^T = op(b)^T op(a)^T: pass b first.
    const cublasOperation_t op_b = tb ? CUBLAS_OP_T : CUBLAS_OP_N, op_a = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
    const int M = static_cast<int>(m), N = static_cast<int>(n), K = static_cast<int>(k);
    // cuBLAS wants leading dimensions >= 1 even when k == 0 (then out = beta * out, as on the CPU).
    const int ldb = std::max(1, tb ? K : N), lda = std::max(1, ta ? M : K);
    if (batch == 1) {
      check_cublas(cublasSgemm(cublas_, op_b, op_a, N, M, K, &al, ptr<const float>(b), ldb, ptr<const float>(a), lda,
                               &be, ptr<float>(out), N),
                   "cublasSgemm", args);
    } else {
      check_cublas(cublasSgemmStridedBatched(cublas_, op_b, op_a, N, M, K, &al, ptr<const float>(b), ldb,
                                             static_cast<long long>(k) * n, ptr<const float>(a), lda,
                                             static_cast<long long>(m) * k, &be, ptr<float>(out), N,
                                             static_cast<long long>(m) * n, static_cast<int>(batch)),
                   "cublasSgemmStridedBatched", args);
    }
  }

  // ---- elementwise

  void unary(UnaryOp op, const Tensor& x, const Tensor& out, double alpha, double beta) override {
    const Args args = {{"x", x}, {"out", out}};
    prepare(unary_op_name(op), args);
    check_kernel(launch_unary(unary_code(op), ptr<const float>(x), ptr<float>(out), x.numel(),
                              static_cast<float>(alpha), static_cast<float>(beta), stream_),
                 unary_op_name(op), args);
  }

  void activation_backward(UnaryOp act, const Tensor& x, const Tensor& dy, const Tensor& dx) override {
    const Args args = {{"x", x}, {"dy", dy}, {"dx", dx}};
    prepare("activation_backward", args);
    TG_CHECK(act == UnaryOp::relu || act == UnaryOp::gelu,
             "cuda kernel activation_backward: {} is not an activation with a backward kernel", unary_op_name(act));
    check_kernel(launch_activation_backward(unary_code(act), ptr<const float>(x), ptr<const float>(dy),
                                            ptr<float>(dx), x.numel(), stream_),
                 act == UnaryOp::relu ? "relu_backward" : "gelu_backward", args);
  }

  void bias_gelu_forward(const Tensor& x, const Tensor& bias, const Tensor& y) override {
    const Args args = {{"x", x}, {"bias", bias}, {"y", y}};
    prepare("bias_gelu", args);
    check_kernel(launch_bias_gelu_forward(ptr<const float>(x), ptr<const float>(bias), ptr<float>(y), x.size(0),
                                          x.size(1), stream_),
                 "bias_gelu", args);
  }

  void bias_gelu_backward(const Tensor& x, const Tensor& bias, const Tensor& dy, const Tensor& dx) override {
    const Args args = {{"x", x}, {"bias", bias}, {"dy", dy}, {"dx", dx}};
    prepare("bias_gelu_backward", args);
    check_kernel(launch_bias_gelu_backward(ptr<const float>(x), ptr<const float>(bias), ptr<const float>(dy),
                                           ptr<float>(dx), x.size(0), x.size(1), stream_),
                 "bias_gelu_backward", args);
  }

  void binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) override {
    const Args args = {{"a", a, Want::f32, false}, {"b", b, Want::f32, false}, {"out", out}};
    const char* name = binary_op_name(op);
    prepare(name, args);
    check_kernel(launch_binary(binary_code(op), ptr<const float>(a), make_operand(name, a), ptr<const float>(b),
                               make_operand(name, b), ptr<float>(out), out.numel(), stream_),
                 name, args);
  }

  // ---- reductions

  void reduce_dim(ReduceOp op, const Tensor& x, const Tensor& out, std::int64_t outer, std::int64_t reduce,
                  std::int64_t inner) override {
    const Args args = {{"x", x}, {"out", out}};
    prepare("reduce_dim", args);
    const std::size_t bytes = reduce_dim_workspace_bytes(outer, reduce, inner);
    Scratch scratch(allocator_, bytes, "reduce_dim");
    check_kernel(launch_reduce_dim(reduce_code(op), ptr<const float>(x), ptr<float>(out), outer, reduce, inner,
                                   scratch.get(), bytes, stream_),
                 "reduce_dim", args);
  }

  void reduce_all(ReduceOp op, const Tensor& x, const Tensor& out) override {
    const Args args = {{"x", x}, {"out", out}};
    prepare("reduce_all", args);
    const std::int64_t n = x.numel();
    const std::size_t bytes = reduce_all_workspace_bytes(n);
    Scratch scratch(allocator_, bytes, "reduce_all");
    check_kernel(launch_reduce_all(reduce_code(op), ptr<const float>(x), ptr<float>(out), n,
                                   scratch.get(), bytes, stream_),
                 "reduce_all", args);
  }

  void argmax_lastdim(const Tensor& x, const Tensor& out) override {
    const Args args = {{"x", x}, {"out", out, Want::i32}};
    prepare("argmax", args);
    TG_CHECK(x.dim() == 2, "cuda kernel argmax: x must be [rows, n], got {}", x.str());
    check_kernel(launch_argmax_lastdim(ptr<const float>(x), ptr<std::int32_t>(out), x.size(0), x.size(1), stream_),
                 "argmax", args);
  }

  void count_equal(const Tensor& a, const Tensor& b, const Tensor& out) override {
    const Args args = {{"a", a, Want::i32}, {"b", b, Want::i32}, {"out", out}};
    prepare("count_equal", args);
    TG_CHECK(a.numel() == b.numel() && out.numel() == 1, "cuda kernel count_equal: {}", describe(args));
    check_kernel(launch_count_equal(ptr<const std::int32_t>(a), ptr<const std::int32_t>(b), ptr<float>(out),
                                    a.numel(), stream_),
                 "count_equal", args);
  }

  // ---- flat-buffer passes

  void adam_update(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v, const AdamStep& s,
                   const GradClip& clip) override {
    const Args args = {{"param", param}, {"grad", grad}, {"m", m}, {"v", v}};
    prepare("adam_update", args);
    check_kernel(launch_adam_update(ptr<float>(param), ptr<const float>(grad), ptr<float>(m), ptr<float>(v),
                                    param.numel(), adam_constants(s), clip_arg("adam_update", clip), stream_),
                 "adam_update", args);
  }

  void adam_update_device(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v,
                          const AdamStep& fixed, const Tensor& scalars, const GradClip& clip) override {
    const Args args = {{"param", param}, {"grad", grad}, {"m", m}, {"v", v}, {"scalars", scalars}};
    prepare("adam_update_device", args);
    TG_CHECK(scalars.numel() == kAdamDeviceScalars,
             "cuda kernel adam_update_device: scalars must hold {} values, got {}", kAdamDeviceScalars, scalars.str());
    check_kernel(launch_adam_update_device(ptr<float>(param), ptr<const float>(grad), ptr<float>(m), ptr<float>(v),
                                           param.numel(), adam_constants(fixed), ptr<const float>(scalars),
                                           clip_arg("adam_update_device", clip), stream_),
                 "adam_update_device", args);
  }

  void sgd_update_device(const Tensor& param, const Tensor& grad, const Tensor& buf, const Tensor& scalars,
                         double momentum, double weight_decay, const GradClip& clip) override {
    const Args args = {{"param", param}, {"grad", grad}, {"scalars", scalars}};
    prepare("sgd_update_device", args);
    TG_CHECK(scalars.numel() == kSgdDeviceScalars, "cuda kernel sgd_update_device: scalars must hold {} values, got {}",
             kSgdDeviceScalars, scalars.str());
    float* buf_ptr = nullptr;
    if (buf.defined()) {
      prepare("sgd_update_device", {{"momentum_buffer", buf}});
      buf_ptr = ptr<float>(buf);
    }
    TG_CHECK(momentum == 0.0 || buf_ptr != nullptr,
             "cuda kernel sgd_update_device: momentum {} needs a momentum buffer", momentum);
    check_kernel(launch_sgd_update_device(ptr<float>(param), ptr<const float>(grad), buf_ptr, param.numel(),
                                          ptr<const float>(scalars), static_cast<float>(momentum),
                                          static_cast<float>(weight_decay), clip_arg("sgd_update_device", clip),
                                          stream_),
                 "sgd_update_device", args);
  }

  void sgd_update(const Tensor& param, const Tensor& grad, const Tensor& buf, double lr, double momentum,
                  double weight_decay, bool first_step, const GradClip& clip) override {
    const Args args = {{"param", param}, {"grad", grad}};
    prepare("sgd_update", args);
    float* buf_ptr = nullptr;
    if (buf.defined()) {
      prepare("sgd_update", {{"momentum_buffer", buf}});
      buf_ptr = ptr<float>(buf);
    }
    TG_CHECK(momentum == 0.0 || buf_ptr != nullptr, "cuda kernel sgd_update: momentum {} needs a momentum buffer",
             momentum);
    check_kernel(launch_sgd_update(ptr<float>(param), ptr<const float>(grad), buf_ptr, param.numel(),
                                   static_cast<float>(lr), static_cast<float>(momentum),
                                   static_cast<float>(weight_decay), first_step, clip_arg("sgd_update", clip), stream_),
                 "sgd_update", args);
  }

  void clip_by_norm(const Tensor& x, const Tensor& norm, double max_norm) override {
    const Args args = {{"x", x}, {"norm", norm}};
    prepare("clip_by_norm", args);
    TG_CHECK(norm.numel() == 1, "cuda kernel clip_by_norm: norm must have one element, got {}", norm.str());
    check_kernel(launch_clip_by_norm(ptr<float>(x), x.numel(), ptr<const float>(norm), static_cast<float>(max_norm),
                                     stream_),
                 "clip_by_norm", args);
  }

  void segmented_reduce(ReduceOp op, const Tensor& x, const std::vector<std::int64_t>& offsets,
                        const Tensor& out) override {
    const Args args = {{"x", x}, {"out", out}};
    prepare("segmented_reduce", args);
    const std::int64_t segments = check_offsets("segmented_reduce", x, offsets, out.numel());
    check_kernel(launch_segmented_reduce(reduce_code(op), ptr<const float>(x), offsets.data(), segments,
                                         ptr<float>(out), stream_),
                 "segmented_reduce", args);
  }

  void segmented_scale(const Tensor& x, const std::vector<std::int64_t>& offsets, const Tensor& scales) override {
    const Args args = {{"x", x}, {"scales", scales}};
    prepare("segmented_scale", args);
    const std::int64_t segments = check_offsets("segmented_scale", x, offsets, scales.numel());
    check_kernel(
        launch_segmented_scale(ptr<float>(x), offsets.data(), segments, ptr<const float>(scales), stream_),
        "segmented_scale", args);
  }

  // ---- fused model kernels

  void softmax_forward(const Tensor& x, const Tensor& y) override {
    const Args args = {{"x", x}, {"y", y}};
    prepare("softmax_forward", args);
    check_kernel(launch_softmax_forward(ptr<const float>(x), ptr<float>(y), x.size(0), x.size(1), stream_),
                 "softmax_forward", args);
  }

  void softmax_backward(const Tensor& y, const Tensor& dy, const Tensor& dx) override {
    const Args args = {{"y", y}, {"dy", dy}, {"dx", dx}};
    prepare("softmax_backward", args);
    check_kernel(launch_softmax_backward(ptr<const float>(y), ptr<const float>(dy), ptr<float>(dx), y.size(0),
                                         y.size(1), stream_),
                 "softmax_backward", args);
  }

  void layernorm_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps, const Tensor& y,
                         const Tensor& mean, const Tensor& rstd) override {
    const Args args = {{"x", x}, {"gamma", gamma}, {"beta", beta}, {"y", y}, {"mean", mean}, {"rstd", rstd}};
    prepare("layernorm_forward", args);
    check_kernel(launch_layernorm_forward(ptr<const float>(x), ptr<const float>(gamma), ptr<const float>(beta),
                                          static_cast<float>(eps), ptr<float>(y), ptr<float>(mean), ptr<float>(rstd),
                                          x.size(0), x.size(1), stream_),
                 "layernorm_forward", args);
  }

  void add_layernorm_forward(const Tensor& x, const Tensor& residual, const Tensor& gamma, const Tensor& beta,
                             double eps, const Tensor& sum, const Tensor& y, const Tensor& mean,
                             const Tensor& rstd) override {
    const Args args = {{"x", x},     {"residual", residual}, {"gamma", gamma}, {"beta", beta},
                       {"sum", sum}, {"y", y},               {"mean", mean},   {"rstd", rstd}};
    prepare("add_layernorm_forward", args);
    check_kernel(launch_add_layernorm_forward(ptr<const float>(x), ptr<const float>(residual), ptr<const float>(gamma),
                                              ptr<const float>(beta), static_cast<float>(eps), ptr<float>(sum),
                                              ptr<float>(y), ptr<float>(mean), ptr<float>(rstd), x.size(0), x.size(1),
                                              stream_),
                 "add_layernorm_forward", args);
  }

  void layernorm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& mean,
                          const Tensor& rstd, const Tensor& dsum, const Tensor& dx, const Tensor& dgamma,
                          const Tensor& dbeta) override {
    const Args args = {{"dy", dy},     {"x", x},   {"gamma", gamma},   {"mean", mean},
                       {"rstd", rstd}, {"dx", dx}, {"dgamma", dgamma}, {"dbeta", dbeta}};
    prepare("layernorm_backward", args);
    if (dsum.defined()) prepare("layernorm_backward", {{"dsum", dsum}});
    const std::int64_t rows = x.size(0), c = x.size(1);
    const std::size_t bytes = layernorm_backward_workspace_bytes(rows, c);
    Scratch scratch(allocator_, bytes, "layernorm_backward");
    check_kernel(launch_layernorm_backward(ptr<const float>(dy), ptr<const float>(x), ptr<const float>(gamma),
                                           ptr<const float>(mean), ptr<const float>(rstd),
                                           dsum.defined() ? ptr<const float>(dsum) : nullptr, ptr<float>(dx),
                                           ptr<float>(dgamma), ptr<float>(dbeta), rows, c, scratch.get(), bytes,
                                           stream_),
                 "layernorm_backward", args);
  }

  void layernorm_double_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& mean,
                                 const Tensor& rstd, const Tensor& gdx, const Tensor& gdgamma, const Tensor& gdbeta,
                                 const Tensor& ddy, const Tensor& dx, const Tensor& dgamma) override {
    const Args args = {{"dy", dy},   {"x", x},     {"gamma", gamma},     {"mean", mean},
                       {"rstd", rstd}, {"gdx", gdx}, {"gdgamma", gdgamma}, {"gdbeta", gdbeta},
                       {"ddy", ddy},   {"dx", dx},   {"dgamma", dgamma}};
    prepare("layernorm_double_backward", args);
    const std::int64_t rows = x.size(0), c = x.size(1);
    const std::size_t bytes = layernorm_double_backward_workspace_bytes(rows, c);
    Scratch scratch(allocator_, bytes, "layernorm_double_backward");
    check_kernel(launch_layernorm_double_backward(
                     ptr<const float>(dy), ptr<const float>(x), ptr<const float>(gamma), ptr<const float>(mean),
                     ptr<const float>(rstd), ptr<const float>(gdx), ptr<const float>(gdgamma),
                     ptr<const float>(gdbeta), ptr<float>(ddy), ptr<float>(dx), ptr<float>(dgamma), rows, c,
                     scratch.get(), bytes, stream_),
                 "layernorm_double_backward", args);
  }

  void attention_forward(const Tensor& qkv, std::int64_t n_heads, const Tensor& y, const Tensor& probs) override {
    const Args args = {{"qkv", qkv}, {"y", y}, {"probs", probs}};
    prepare("attention_forward", args);
    check_kernel(launch_attention_forward(ptr<const float>(qkv), ptr<float>(y), ptr<float>(probs), qkv.size(0),
                                          qkv.size(1), qkv.size(2) / 3, n_heads, limits_, stream_),
                 "attention_forward", args);
  }

  void attention_backward(const Tensor& dy, const Tensor& qkv, const Tensor& probs, std::int64_t n_heads,
                          const Tensor& dqkv) override {
    const Args args = {{"dy", dy}, {"qkv", qkv}, {"probs", probs}, {"dqkv", dqkv}};
    prepare("attention_backward", args);
    const std::int64_t b = qkv.size(0), t = qkv.size(1), c = qkv.size(2) / 3;
    const std::size_t bytes = attention_backward_workspace_bytes(b, t, c, n_heads, limits_);
    Scratch scratch(allocator_, bytes, "attention_backward");
    check_kernel(launch_attention_backward(ptr<const float>(dy), ptr<const float>(qkv), ptr<const float>(probs),
                                           ptr<float>(dqkv), b, t, c, n_heads, limits_, scratch.get(),
                                           bytes, stream_),
                 "attention_backward", args);
  }

  void attention_double_backward(const Tensor& dy, const Tensor& qkv, const Tensor& probs, const Tensor& g,
                                 std::int64_t n_heads, const Tensor& gqkv, const Tensor& gdy) override {
    const Args args = {{"dy", dy}, {"qkv", qkv}, {"probs", probs}, {"g", g}, {"gqkv", gqkv}, {"gdy", gdy}};
    prepare("attention_double_backward", args);
    const std::int64_t b = qkv.size(0), t = qkv.size(1), c = qkv.size(2) / 3;
    const std::size_t bytes = attention_double_backward_workspace_bytes(b, t, n_heads);
    Scratch scratch(allocator_, bytes, "attention_double_backward");
    check_kernel(launch_attention_double_backward(ptr<const float>(dy), ptr<const float>(qkv),
                                                  ptr<const float>(probs), ptr<const float>(g), ptr<float>(gqkv),
                                                  ptr<float>(gdy), b, t, c, n_heads, scratch.get(), bytes, stream_),
                 "attention_double_backward", args);
  }

  void embedding_forward(const Tensor& ids, const Tensor& weight, const Tensor& out) override {
    const Args args = {{"ids", ids, Want::i32}, {"weight", weight}, {"out", out}};
    prepare("embedding_forward", args);
    check_kernel(launch_embedding_forward(ptr<const std::int32_t>(ids), ptr<const float>(weight), ptr<float>(out),
                                          ids.numel(), weight.size(1), stream_),
                 "embedding_forward", args);
  }

  void embedding_backward(const Tensor& ids, const Tensor& dout, const Tensor& dweight) override {
    const Args args = {{"ids", ids, Want::i32}, {"dout", dout}, {"dweight", dweight}};
    prepare("embedding_backward", args);
    check_kernel(launch_embedding_backward(ptr<const std::int32_t>(ids), ptr<const float>(dout), ptr<float>(dweight),
                                           ids.numel(), dweight.size(0), dweight.size(1), stream_),
                 "embedding_backward", args);
  }

  void cross_entropy_forward(const Tensor& logits, const Tensor& targets, const Tensor& losses, const Tensor& lse,
                             const Tensor& mean) override {
    const Args args = {{"logits", logits}, {"targets", targets, Want::i32}, {"losses", losses}, {"lse", lse},
                       {"mean", mean}};
    prepare("cross_entropy_forward", args);
    const std::size_t bytes = cross_entropy_forward_workspace_bytes(logits.size(0));
    Scratch scratch(allocator_, bytes, "cross_entropy_forward");
    check_kernel(launch_cross_entropy_forward(ptr<const float>(logits), ptr<const std::int32_t>(targets),
                                              ptr<float>(losses), ptr<float>(lse), ptr<float>(mean), logits.size(0),
                                              logits.size(1), scratch.get(), bytes, stream_),
                 "cross_entropy_forward", args);
  }

  void cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& lse, const Tensor& dloss,
                              double scale, const Tensor& dlogits) override {
    const Args args = {{"logits", logits}, {"targets", targets, Want::i32}, {"lse", lse},
                       {"dloss", dloss},   {"dlogits", dlogits}};
    prepare("cross_entropy_backward", args);
    TG_CHECK(dloss.numel() == 1, "cuda kernel cross_entropy_backward: dloss must have one element, got {}",
             dloss.str());
    // dloss stays on the device: the kernel reads it.
    check_kernel(launch_cross_entropy_backward(ptr<const float>(logits), ptr<const std::int32_t>(targets),
                                               ptr<const float>(lse), ptr<const float>(dloss), scale,
                                               ptr<float>(dlogits), logits.size(0), logits.size(1), stream_),
                 "cross_entropy_backward", args);
  }

  void stablemax_cross_entropy_forward(const Tensor& logits, const Tensor& targets, const Tensor& losses,
                                       const Tensor& sums, const Tensor& mean) override {
    const Args args = {{"logits", logits}, {"targets", targets, Want::i32}, {"losses", losses}, {"sums", sums},
                       {"mean", mean}};
    prepare("stablemax_cross_entropy_forward", args);
    const std::size_t bytes = stablemax_cross_entropy_forward_workspace_bytes(logits.size(0));
    Scratch scratch(allocator_, bytes, "stablemax_cross_entropy_forward");
    check_kernel(launch_stablemax_cross_entropy_forward(ptr<const float>(logits), ptr<const std::int32_t>(targets),
                                                        ptr<float>(losses), ptr<float>(sums), ptr<float>(mean),
                                                        logits.size(0), logits.size(1), scratch.get(), bytes,
                                                        stream_),
                 "stablemax_cross_entropy_forward", args);
  }

  void stablemax_cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& sums,
                                        const Tensor& dloss, double scale, const Tensor& dlogits) override {
    const Args args = {{"logits", logits}, {"targets", targets, Want::i32}, {"sums", sums},
                       {"dloss", dloss},   {"dlogits", dlogits}};
    prepare("stablemax_cross_entropy_backward", args);
    TG_CHECK(dloss.numel() == 1, "cuda kernel stablemax_cross_entropy_backward: dloss must have one element, got {}",
             dloss.str());
    // dloss stays on the device: the kernel reads it.
    check_kernel(launch_stablemax_cross_entropy_backward(ptr<const float>(logits), ptr<const std::int32_t>(targets),
                                                         ptr<const float>(sums), ptr<const float>(dloss), scale,
                                                         ptr<float>(dlogits), logits.size(0), logits.size(1),
                                                         stream_),
                 "stablemax_cross_entropy_backward", args);
  }

  // ---- CUDA graphs

  void begin_capture() override {
    TG_CHECK(!capturing_, "cuda {}: a graph capture is already running (one at a time)", name_);
    activate();
    capture_pool_ = allocator_.begin_pool();
    const char* call = "";
    const cudaError_t err = graphs_.begin(stream_, call);
    if (err != cudaSuccess) {
      allocator_.release_pool(capture_pool_);
      capture_pool_ = 0;
      check_call(err, call);
    }
    capturing_ = true;
  }

  std::uint64_t end_capture() override {
    TG_CHECK(capturing_, "cuda {}: end_capture without begin_capture", name_);
    capturing_ = false;
    allocator_.end_pool();
    std::uint64_t id = 0;
    const char* call = "";
    const cudaError_t err = graphs_.end(stream_, id, call);
    if (err != cudaSuccess) {
      allocator_.release_pool(capture_pool_);
      capture_pool_ = 0;
      check_call(err, call);
    }
    graph_pools_[id] = capture_pool_;
    capture_pool_ = 0;
    return id;
  }

  void abort_capture() noexcept override {
    if (!capturing_) return;
    capturing_ = false;
    graphs_.abort(stream_);
    allocator_.release_pool(capture_pool_);  // no graph will use it
    capture_pool_ = 0;
  }

  void launch_graph(std::uint64_t graph) override {
    refuse_during_capture("launch_graph");
    TG_CHECK(graphs_.contains(graph), "cuda {}: no CUDA graph with id {}", name_, graph);
    activate();
    const char* call = "";
    check_call(graphs_.launch(graph, stream_, call), call);
  }

  void destroy_graph(std::uint64_t graph) override {
    if (!graphs_.contains(graph)) return;
    refuse_during_capture("destroy_graph");
    activate();
    // A launch may still run: the pool's blocks go back to the cache only after it has finished.
    check_call(cudaStreamSynchronize(stream_), "cudaStreamSynchronize (before cudaGraphExecDestroy)");
    const char* call = "";
    check_call(graphs_.destroy(graph, call), call);
    allocator_.release_pool(graph_pools_.at(graph));
    graph_pools_.erase(graph);
  }

 private:
  // The kernels' constants of one Adam step (adam_device_scalars rounded to float, as on the CPU).
  static AdamConstants adam_constants(const AdamStep& s) {
    const auto derived = adam_device_scalars(s);
    AdamConstants c{};
    c.beta1 = static_cast<float>(s.beta1);
    c.beta2 = static_cast<float>(s.beta2);
    c.weight_decay = static_cast<float>(s.weight_decay);
    c.step_size = static_cast<float>(derived[0]);
    c.sqrt_bc2 = static_cast<float>(derived[1]);
    c.eps = static_cast<float>(s.eps);
    c.decay = static_cast<float>(derived[2]);
    c.decoupled = s.decoupled_weight_decay;
    return c;
  }

  // Calls that wait for the device would invalidate a capture (and could never be replayed).
  void refuse_during_capture(const char* op) const {
    TG_CHECK(!capturing_,
             "cuda {} on {}: not allowed while a CUDA graph is being captured (it waits for the device); the "
             "captured step must keep its values on the device and do host transfers before or after the capture",
             op, name_);
  }

  // Makes this GPU current for the calling thread (the runtime's current device is per thread).
  void activate() override {
    thread_local int current = -1;
    if (current == index_) return;
    check_call(cudaSetDevice(index_), "cudaSetDevice");
    current = index_;
  }

  // Validates the arguments of a kernel (dtype, device, contiguity) and makes this GPU current.
  // A GradClip as the update kernels take it (its norm validated like any argument).
  Clip clip_arg(const char* op, const GradClip& clip) {
    if (!clip.norm.defined()) return Clip{};
    prepare(op, {{"clip norm", clip.norm}});
    TG_CHECK(clip.norm.numel() == 1, "cuda kernel {}: the clip norm must be one element, got {}", op, clip.norm.str());
    return Clip{ptr<const float>(clip.norm), static_cast<float>(clip.max_norm)};
  }

  void prepare(const char* op, Args args) override {
    for (const Arg& a : args) {
      TG_CHECK(a.t.defined(), "cuda kernel {}: {} is undefined", op, a.name);
      TG_CHECK(a.t.dtype() != DType::f64, "f64 tensors are CPU-only (op {}: {} is {})", op, a.name, a.t.str());
      TG_CHECK(a.t.device() == Device::cuda(index_), "cuda kernel {} on {}: {} is {}", op, name_, a.name, a.t.str());
      const bool dtype_ok = a.want == Want::word || (a.want == Want::f32 && a.t.dtype() == DType::f32) ||
                            (a.want == Want::i32 && a.t.dtype() == DType::i32);
      TG_CHECK(dtype_ok, "cuda kernel {}: {} must be {}, got {}", op, a.name, a.want == Want::i32 ? "i32" : "f32",
               a.t.str());
      TG_CHECK(!a.contiguous || a.t.is_contiguous(), "cuda kernel {}: {} must be contiguous, got {} with strides {}",
               op, a.name, a.t.str(), shape_str(a.t.strides()));
    }
    activate();
  }

  // Offsets [segments + 1], non-decreasing, inside x; returns the number of segments.
  std::int64_t check_offsets(const char* op, const Tensor& x, const std::vector<std::int64_t>& offsets,
                             std::int64_t per_segment_values) {
    TG_CHECK(!offsets.empty(), "cuda kernel {}: no segment offsets", op);
    const auto segments = static_cast<std::int64_t>(offsets.size()) - 1;
    TG_CHECK(per_segment_values == segments, "cuda kernel {}: {} segments but {} per-segment values", op, segments,
             per_segment_values);
    TG_CHECK(offsets.front() >= 0 && offsets.back() <= x.numel(),
             "cuda kernel {}: offsets [{}, {}] outside x {}", op, offsets.front(), offsets.back(), x.str());
    for (std::size_t s = 1; s < offsets.size(); ++s) {
      TG_CHECK(offsets[s] >= offsets[s - 1], "cuda kernel {}: offsets decrease at segment {}", op, s - 1);
    }
    return segments;
  }

  void check_call(cudaError_t err, const char* call) const override {
    if (err == cudaSuccess) return;
    throw Error(fmt::format("cuda {} on {}: {}{}", call, name_, cuda_error_text(err), async_hint(err)));
  }

  void check_copy(cudaError_t err, const char* op, std::size_t nbytes) const {
    if (err == cudaSuccess) return;
    throw Error(fmt::format("cuda {} of {} bytes on {}: {}{}", op, nbytes, name_, cuda_error_text(err),
                            async_hint(err)));
  }

  void check_kernel(cudaError_t err, const char* kernel, Args args) const override {
    if (err == cudaSuccess) return;
    throw Error(fmt::format("cuda kernel {} on {}: {}{}", kernel, describe(args), cuda_error_text(err),
                            async_hint(err)));
  }

  void check_cublas(cublasStatus_t status, const char* call, Args args) const {
    if (status == CUBLAS_STATUS_SUCCESS) return;
    const std::string on = args.size() > 0 ? describe(args) : name_;
    throw Error(fmt::format("cuBLAS {} on {}: {} ({})", call, on, cublas_status_text(status),
                            cublas_status_name(status)));
  }

  int index_;
  std::string name_;
  CachingAllocator allocator_;
  KernelLimits limits_;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  void* cublas_workspace_ = nullptr;  // cuBLAS's fixed workspace (never freed, like the handle)
  HostStaging staging_;               // pinned slots of copy_from_host_async
  GraphSet graphs_;
  bool capturing_ = false;
  CachingAllocator::PoolId capture_pool_ = 0;                          // the pool of the running capture
  std::map<std::uint64_t, CachingAllocator::PoolId> graph_pools_;     // graph id -> its capture pool
};

}  // namespace

Backend& backend(int index) {
  // Fast path: an already created backend, without locking.
  constexpr int kFastSlots = 16;
  static std::atomic<CudaBackend*> fast[kFastSlots] = {};
  if (index >= 0 && index < kFastSlots) {
    if (CudaBackend* b = fast[index].load(std::memory_order_acquire)) return *b;
  }

  const std::string problem = device_count_problem();
  TG_CHECK(problem.empty(), "device cuda:{} requested but no CUDA GPU is available: {}", index, problem);
  const int count = device_count();
  TG_CHECK(index >= 0 && index < count, "device cuda:{} requested but this machine has {} CUDA GPU{} (cuda:0 to cuda:{})",
           index, count, count == 1 ? "" : "s", count - 1);

  // Leaked on purpose, like the backends themselves: tensors in static storage may outlive main().
  static std::mutex* mutex = new std::mutex();
  static auto* all = new std::map<int, CudaBackend*>();
  std::lock_guard<std::mutex> lock(*mutex);
  CudaBackend*& slot = (*all)[index];
  if (slot == nullptr) {
    slot = new CudaBackend(index);
    if (index < kFastSlots) fast[index].store(slot, std::memory_order_release);
  }
  return *slot;
}

GpuContext& gpu_context(int index) {
  return static_cast<CudaBackend&>(backend(index));  // every CUDA backend is a CudaBackend
}

}  // namespace tg::cuda
