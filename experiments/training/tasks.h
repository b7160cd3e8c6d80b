// Modular-arithmetic tasks and their seeded splits.
//
// Layout "sequence" (NeuralGrok): <v1>..<vk><op1>..<op(k-1)><=>, answer = the result token.
//   value tokens 0..p-1, one token per distinct operator (in order of first appearance), then "=".
//   a+b, a-b, a*b, a*a-b (mod p, default 97):  a in [0, p), b in [1, p)    -> p (p - 1) examples
//     a*a-b has the values (a, a, b) and the operators (*, -): vocabulary p + 3; the others p + 2.
//   a*c+b*d-e (mod p, default 7): a, b, e in [0, p), c, d in [1, p)        -> p^3 (p - 1)^2 examples
//     values (a, c, b, d, e), operators (*, +, *, -): vocabulary p + 4.
// Layout "interleaved": the same examples with each operator between its operands, "a op b =", "a * a - b =",
//   and "a * b + c * d - e =" for a*c+b*d-e (so the multiplied pairs sit at positions 0 and 4, 2 and 6), the
//   token order of the official NeuralGrok code.
// Layout "pair" (GrokTransfer): just the two operands (a, b), both in [0, p), vocabulary p; binary tasks only.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace tg {

enum class TaskLayout { sequence, interleaved, pair };
TaskLayout parse_task_layout(const std::string& name);  // "sequence" | "interleaved" | "pair"
const char* task_layout_name(TaskLayout layout);

struct Dataset {
  std::string task;  // canonical name, e.g. "a+b"
  std::int64_t modulus = 0;
  TaskLayout layout = TaskLayout::sequence;
  std::int64_t vocab = 0;
  std::int64_t seq_len = 0;
  std::vector<std::int32_t> inputs;   // [size * seq_len], row-major
  std::vector<std::int32_t> targets;  // [size]
  std::int64_t size() const { return static_cast<std::int64_t>(targets.size()); }
};

// The canonical task names: a+b, a-b, a*b, a*a-b, a*c+b*d-e.
const std::vector<std::string>& task_names();
std::int64_t default_modulus(const std::string& task);  // 97, or 7 for a*c+b*d-e

// Every example of the task, in a fixed order. Throws naming the problem for an unknown task, p < 2,
// or the pair layout on a task with more than two operands.
Dataset make_dataset(const std::string& task, std::int64_t modulus, TaskLayout layout = TaskLayout::sequence);

// Example indices of each part. train ∪ outer ∪ test is every example, disjoint.
struct Split {
  std::vector<std::int64_t> train;  // what the model trains on (D_inner for NeuralGrok)
  std::vector<std::int64_t> outer;  // held out from the training part (NeuralGrok's D_outer); may be empty
  std::vector<std::int64_t> test;
};

// Shuffles all examples with `seed`; the first floor(train_fraction * N) form the training part, of
// which the first floor(outer_fraction * N) go to `outer` (a fraction of the WHOLE set, as docs/methods.md).
Split split_dataset(std::int64_t size, double train_fraction, double outer_fraction, std::uint64_t seed);

// Inputs [n, seq_len] and targets [n] of the given examples, on `device`.
void gather_examples(const Dataset& data, const std::vector<std::int64_t>& indices, Device device, Tensor& inputs,
                     Tensor& targets);
// The same on the host, row-major (inputs: n * seq_len values), for callers that upload them themselves.
void gather_examples_host(const Dataset& data, const std::vector<std::int64_t>& indices,
                          std::vector<std::int32_t>& inputs, std::vector<std::int32_t>& targets);

}  // namespace tg
