// Bad input gets a clear error naming the op and the shapes, and leaves nothing half-done.
#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include "support.h"

using namespace tgtest;
using namespace tg;
using Catch::Matchers::ContainsSubstring;

TEST_CASE("shape errors name the op and both shapes", "[errors]") {
  Rng rng(1);
  Tensor a = random(rng, {3, 4}), b = random(rng, {5, 2});
  CHECK_THROWS_WITH(matmul(a, b), ContainsSubstring("matmul") && ContainsSubstring("[3, 4]") &&
                                      ContainsSubstring("[5, 2]"));
  CHECK_THROWS_WITH(add(a, b), ContainsSubstring("add") && ContainsSubstring("[3, 4]") &&
                                   ContainsSubstring("cannot be broadcast"));
  CHECK_THROWS_WITH(linear(a, random(rng, {6, 5})), ContainsSubstring("linear") && ContainsSubstring("[6, 5]"));
  CHECK_THROWS_WITH(layernorm(a, random(rng, {3}), random(rng, {4})),
                    ContainsSubstring("layernorm") && ContainsSubstring("gamma [3]"));
  CHECK_THROWS_WITH(layernorm_backward(random(rng, {3, 5}), a, random(rng, {4})),
                    ContainsSubstring("layernorm_backward") && ContainsSubstring("dy [3, 5]") &&
                        ContainsSubstring("[3, 4]"));
  CHECK_THROWS_WITH(layernorm_backward(a, a, random(rng, {3})),
                    ContainsSubstring("layernorm_backward") && ContainsSubstring("gamma [3]"));
  CHECK_THROWS_WITH(causal_self_attention(random(rng, {2, 3, 10}), 2),
                    ContainsSubstring("causal_self_attention") && ContainsSubstring("[2, 3, 10]"));
  CHECK_THROWS_WITH(causal_self_attention(random(rng, {2, 3, 12}), 3),
                    ContainsSubstring("not divisible into 3 heads"));
  CHECK_THROWS_WITH(reshape(a, {5, -1}), ContainsSubstring("reshape") && ContainsSubstring("[3, 4]"));
  CHECK_THROWS_WITH(slice(a, 1, 2, 3), ContainsSubstring("slice") && ContainsSubstring("out of range"));
  CHECK_THROWS_WITH(concat({a, b}, 0), ContainsSubstring("concat"));
  CHECK_THROWS_WITH(sum(a, 2), ContainsSubstring("sum") && ContainsSubstring("dimension 2"));
}

TEST_CASE("a view with more than 8 dimensions that cannot be merged is refused, not overrun", "[errors]") {
  // [3]*9 sliced to 2 in every dimension: no two neighbours are contiguous with each other.
  Tensor x = Tensor::zeros({3, 3, 3, 3, 3, 3, 3, 3, 3}, DType::f32);
  Tensor v = x;
  for (std::int64_t d = 0; d < 9; ++d) v = slice(v, d, 0, 2);
  CHECK_THROWS_WITH(v.contiguous(), ContainsSubstring("more than 8 dimensions that cannot be merged") &&
                                        ContainsSubstring("[2, 2, 2, 2, 2, 2, 2, 2, 2]"));
  // Eight such dimensions are fine.
  Tensor w = Tensor::zeros({3, 3, 3, 3, 3, 3, 3, 3}, DType::f32);
  for (std::int64_t d = 0; d < 8; ++d) w = slice(w, d, 0, 2);
  CHECK(w.contiguous().numel() == 256);
}

TEST_CASE("running out of memory names the tensor, and the allocator keeps working", "[errors][memory]") {
  // 4 PiB: beyond any address space, so the allocation fails whatever the machine's overcommit policy.
  const std::int64_t huge = std::int64_t{1} << 50;
  CHECK_THROWS_WITH(Tensor::empty({2, huge}, DType::f32),
                    ContainsSubstring("out of memory on cpu") && ContainsSubstring("f32 tensor of shape [2, " +
                                                                                   std::to_string(huge) + "]"));
  CHECK(values(Tensor::full({3}, 2.0, DType::f32)) == std::vector<double>{2.0, 2.0, 2.0});
}

TEST_CASE("dtype errors", "[errors]") {
  Rng rng(2);
  Tensor f32 = random(rng, {2, 2}, DType::f32), f64 = random(rng, {2, 2}, DType::f64);
  CHECK_THROWS_WITH(add(f32, f64), ContainsSubstring("add") && ContainsSubstring("f32") && ContainsSubstring("f64"));
  Tensor ids = Tensor::from_vector<std::int32_t>({0, 1}, {2});
  CHECK_THROWS_WITH(exp(ids), ContainsSubstring("exp") && ContainsSubstring("floating"));
  CHECK_THROWS_WITH(embedding(f32, f32), ContainsSubstring("embedding") && ContainsSubstring("i32"));
}

TEST_CASE("out-of-range ids and targets are caught before any kernel reads memory", "[errors]") {
  Rng rng(3);
  Tensor w = random(rng, {5, 3});
  CHECK_THROWS_WITH(embedding(Tensor::from_vector<std::int32_t>({0, 5}, {2}), w),
                    ContainsSubstring("id 5 at position 1") && ContainsSubstring("[0, 5)"));
  CHECK_THROWS_WITH(embedding(Tensor::from_vector<std::int32_t>({-1}, {1}), w), ContainsSubstring("id -1"));
  Tensor logits = random(rng, {2, 4});
  CHECK_THROWS_WITH(cross_entropy(logits, Tensor::from_vector<std::int32_t>({1, 4}, {2})),
                    ContainsSubstring("target 4 at row 1"));
  CHECK_THROWS_WITH(cross_entropy(logits, Tensor::from_vector<std::int32_t>({1}, {1})),
                    ContainsSubstring("targets [1] i32 cpu do not match logits [2, 4]"));
}

TEST_CASE("devices: parsing, and asking for a GPU that is not there", "[errors][device]") {
  CHECK(parse_device("cpu") == Device::cpu());
  CHECK(parse_device("cuda:1") == Device::cuda(1));
  CHECK_THROWS_WITH(parse_device("gpu"), ContainsSubstring("'gpu'") && ContainsSubstring("auto, cpu, cuda"));
  CHECK_THROWS_WITH(parse_device("cuda:x"), ContainsSubstring("cuda:x"));
  if (cuda_is_available()) {
    CHECK(parse_device("auto") == Device::cuda(0));
    Rng rng(4);
    Tensor c = random(rng, {2}, DType::f32).to(Device::cuda(0));
    Tensor h = random(rng, {2}, DType::f32);
    CHECK_THROWS_WITH(add(c, h), ContainsSubstring("add") && ContainsSubstring("cuda:0") && ContainsSubstring("cpu"));
    CHECK_THROWS_WITH(Tensor::zeros({2}, DType::f64, Device::cuda(0)), ContainsSubstring("CPU only"));
  } else {
    CHECK(parse_device("auto") == Device::cpu());
    CHECK(!cuda_unavailable_reason().empty());
    CHECK_THROWS_WITH(Tensor::zeros({2}, DType::f32, Device::cuda(0)), ContainsSubstring("cuda:0"));
  }
}
