// Every op on the GPU (float32) against the CPU in float64: forward outputs and the gradients of a
// random projection, by relative error. New tensors are poisoned with NaN so unwritten outputs fail.
// Without a GPU these tests are reported as skipped, never as passed.
#include <catch2/catch_test_macros.hpp>

#include <cmath>
#include <cstdint>
#include <vector>

#include "engine/backend.h"
#include "op_cases.h"

using namespace tgtest;
using namespace tg;

TEST_CASE("every op on the GPU matches the CPU float64 result", "[cuda][ops]") {
  if (!cuda_is_available()) SKIP("no CUDA GPU: " + cuda_unavailable_reason());
  PoisonGuard poison;
  for (const OpCase& op : op_cases()) {
    DYNAMIC_SECTION(op.name) { check_float32_against_float64(op, 2024, Device::cuda(0)); }
  }
}

TEST_CASE("GPU results are bit-identical run to run", "[cuda][determinism]") {
  if (!cuda_is_available()) SKIP("no CUDA GPU: " + cuda_unavailable_reason());
  for (const OpCase& op : op_cases()) {
    DYNAMIC_SECTION(op.name) {
      Rng rng(77);
      const TensorList inputs = op.inputs(rng);
      const CaseRun a = run_case(op, inputs, Device::cuda(0), DType::f32);
      const CaseRun b = run_case(op, inputs, Device::cuda(0), DType::f32);
      CHECK(values(a.output) == values(b.output));
      for (std::size_t k = 0; k < a.grads.size(); ++k) CHECK(values(a.grads[k]) == values(b.grads[k]));
    }
  }
}

TEST_CASE("GPU kernels at model sizes match the CPU", "[cuda][ops]") {
  if (!cuda_is_available()) SKIP("no CUDA GPU: " + cuda_unavailable_reason());
  PoisonGuard poison;
  for (const OpCase& op : model_size_cases()) {
    DYNAMIC_SECTION(op.name) { check_float32_against_float64(op, 31, Device::cuda(0)); }
  }
}

// Shapes past the launchers' grid caps, where kernels loop over what one grid does not cover: the
// embedding backward's vocabulary rows beyond 65535 blocks, and both cross-entropies' rows beyond
// 65536 blocks of 8 (the mean is then still one ticket-ordered sum over the blocks).
TEST_CASE("GPU kernels past their grid caps match the CPU", "[cuda][ops][long]") {
  if (!cuda_is_available()) SKIP("no CUDA GPU: " + cuda_unavailable_reason());
  PoisonGuard poison;
  const std::vector<OpCase> cases = {
      {"embedding [40] into [70000,3]",
       [](Rng& r) { return TensorList{random_ids(r, {40}, 70000), random(r, {70000, 3})}; },
       [](const TensorList& x) { return embedding(x[0], x[1]); }},
      {"cross_entropy [524300,2]",
       [](Rng& r) { return TensorList{random(r, {524300, 2}, DType::f64, -3, 3), random_ids(r, {524300}, 2)}; },
       [](const TensorList& x) { return cross_entropy(x[0], x[1]); }},
      {"stablemax_cross_entropy [524300,2]",
       [](Rng& r) { return TensorList{random(r, {524300, 2}, DType::f64, -3, 3), random_ids(r, {524300}, 2)}; },
       [](const TensorList& x) { return stablemax_cross_entropy(x[0], x[1]); }},
  };
  for (const OpCase& op : cases) {
    DYNAMIC_SECTION(op.name) { check_float32_against_float64(op, 17, Device::cuda(0)); }
  }
}

// argmax (first maximum, NaNs skipped, as the CPU's scan) and count_equal are exact: the GPU must give
// the CPU's integers, on rows with ties, NaNs, an all-NaN row and rows longer than a warp.
TEST_CASE("argmax and count_equal on the GPU match the CPU exactly", "[cuda][ops]") {
  if (!cuda_is_available()) SKIP("no CUDA GPU: " + cuda_unavailable_reason());
  const std::int64_t rows = 300, n = 99;
  Rng rng(12);
  std::vector<float> x = random(rng, {rows, n}, DType::f32).to_vector<float>();
  for (std::int64_t r = 0; r < rows; r += 3) x[r * n + (r * 7) % n] = x[r * n + (r * 11) % n] = 5.f;  // ties
  for (std::int64_t r = 1; r < rows; r += 5) x[r * n + (r * 13) % n] = std::nanf("");
  for (std::int64_t j = 0; j < n; ++j) x[2 * n + j] = std::nanf("");  // nothing but NaN
  const Tensor logits = Tensor::from_vector(x, {rows, n});
  const Tensor cpu_best = argmax(logits), gpu_best = argmax(logits.to(Device::cuda(0)));
  CHECK(gpu_best.to(Device::cpu()).to_vector<std::int32_t>() == cpu_best.to_vector<std::int32_t>());
  const Tensor targets = random_ids(rng, {rows}, n);
  const double cpu_count = count_equal(cpu_best, targets).item();
  const double gpu_count = count_equal(gpu_best, targets.to(Device::cuda(0))).item();
  CHECK(gpu_count == cpu_count);
  CHECK(count_equal(gpu_best, gpu_best).item() == static_cast<double>(rows));
}

// The ops without gradients (op_cases.h's forward_cases): float32 on the GPU against float32 on the
// CPU, exactly (each output is exact or one correctly rounded operation on both).
TEST_CASE("ops without gradients on the GPU match the CPU exactly", "[cuda][ops]") {
  if (!cuda_is_available()) SKIP("no CUDA GPU: " + cuda_unavailable_reason());
  PoisonGuard poison;
  for (const ForwardCase& op : forward_cases()) {
    DYNAMIC_SECTION(op.name) {
      Rng rng(21);
      const TensorList inputs = op.inputs(rng);
      TensorList on_cpu, on_gpu;
      for (const Tensor& t : inputs) {
        on_cpu.push_back(is_floating(t.dtype()) ? t.to(DType::f32) : t);
        on_gpu.push_back(on_cpu.back().to(Device::cuda(0)));
      }
      const Tensor gpu = op.fn(on_gpu);
      CHECK(gpu.device() == Device::cuda(0));
      CHECK(values(gpu) == values(op.fn(on_cpu)));
    }
  }
}

// The ops reach some reduction kinds only through one path (sum along a dimension, sum of squares
// over everything ...), and the segmented scale only through training: every kind on every path, by
// direct backend calls, against the CPU backend in float64 on the same float32-rounded inputs.
TEST_CASE("every reduction kind and segmented pass on the GPU matches the CPU in float64", "[cuda][ops]") {
  if (!cuda_is_available()) SKIP("no CUDA GPU: " + cuda_unavailable_reason());
  PoisonGuard poison;
  const Device gpu = Device::cuda(0), cpu = Device::cpu();
  for (const ReduceOp op : {ReduceOp::sum, ReduceOp::sum_squares, ReduceOp::abs_entropy}) {
    DYNAMIC_SECTION("reduce op " << static_cast<int>(op)) {
      Rng rng(5);
      // [outer, reduce, inner]: many short columns (one pass) and few long ones (split over blocks).
      for (const Shape& shape : {Shape{64, 40, 7}, Shape{3, 1000, 7}, Shape{1, 2560, 512}}) {
        CAPTURE(shape);
        const Tensor x32 = random(rng, shape, DType::f32);
        const Tensor out_gpu = Tensor::empty({shape[0], shape[2]}, DType::f32, gpu);
        const Tensor out_ref = Tensor::empty({shape[0], shape[2]}, DType::f64, cpu);
        backend_for(gpu).reduce_dim(op, x32.to(gpu), out_gpu, shape[0], shape[1], shape[2]);
        backend_for(cpu).reduce_dim(op, x32.to(DType::f64), out_ref, shape[0], shape[1], shape[2]);
        CHECK(rel_error(out_gpu, out_ref) < 1e-5);
      }
      const Tensor flat = random(rng, {420000}, DType::f32);
      const Tensor all_gpu = Tensor::empty({1}, DType::f32, gpu), all_ref = Tensor::empty({1}, DType::f64, cpu);
      backend_for(gpu).reduce_all(op, flat.to(gpu), all_gpu);
      backend_for(cpu).reduce_all(op, flat.to(DType::f64), all_ref);
      CHECK(rel_error(all_gpu, all_ref) < 1e-5);
      const std::vector<std::int64_t> offsets = {0, 3, 70000, 70001, 420000};
      const Tensor seg_gpu = Tensor::empty({4}, DType::f32, gpu), seg_ref = Tensor::empty({4}, DType::f64, cpu);
      backend_for(gpu).segmented_reduce(op, flat.to(gpu), offsets, seg_gpu);
      backend_for(cpu).segmented_reduce(op, flat.to(DType::f64), offsets, seg_ref);
      CHECK(rel_error(seg_gpu, seg_ref) < 1e-5);
    }
  }
  // Its partner pass (per-tensor normalisation): every segment scaled by its own factor.
  Rng rng(6);
  const Tensor flat = random(rng, {420000}, DType::f32), scales = random(rng, {4}, DType::f32, 0.5, 2.0);
  const std::vector<std::int64_t> offsets = {0, 3, 70000, 70001, 420000};
  const Tensor x_gpu = flat.to(gpu).clone(), x_ref = flat.to(DType::f64);
  backend_for(gpu).segmented_scale(x_gpu, offsets, scales.to(gpu));
  backend_for(cpu).segmented_scale(x_ref, offsets, scales.to(DType::f64));
  CHECK(rel_error(x_gpu, x_ref) < 1e-6);
}

namespace {
// out = 1 * a[3,0] b[0,4] + 0.5 * out on `device`, for each transposition: exactly 0.5 * out.
// Reached only by direct backend calls (matmul and linear handle k = 0 themselves); cuBLAS refuses
// a leading dimension of 0, so on the GPU this checks the backend passes at least 1.
void check_gemm_empty_inner(Device device) {
  for (const bool ta : {false, true}) {
    for (const bool tb : {false, true}) {
      CAPTURE(ta, tb);
      Rng rng(11);
      const Tensor out0 = random(rng, {3, 4}, DType::f32);
      const Tensor a = Tensor::zeros(ta ? Shape{0, 3} : Shape{3, 0}, DType::f32, device);
      const Tensor b = Tensor::zeros(tb ? Shape{4, 0} : Shape{0, 4}, DType::f32, device);
      Tensor out = out0.to(device).clone();
      backend_for(device).gemm(a, b, out, ta, tb, 1.0, 0.5);
      std::vector<double> expected = values(out0);
      for (double& v : expected) v = static_cast<double>(static_cast<float>(v) * 0.5f);
      CHECK(values(out) == expected);
    }
  }
}
}  // namespace

TEST_CASE("a GEMM with an empty inner dimension scales out by beta", "[ops]") {
  check_gemm_empty_inner(Device::cpu());
}

TEST_CASE("on the GPU, a GEMM with an empty inner dimension scales out by beta", "[cuda][ops]") {
  if (!cuda_is_available()) SKIP("no CUDA GPU: " + cuda_unavailable_reason());
  check_gemm_empty_inner(Device::cuda(0));
}
