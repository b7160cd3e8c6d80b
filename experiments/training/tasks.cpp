#include "experiments/training/tasks.h"

#include <fmt/format.h>

#include <cmath>

#include "engine/error.h"
#include "engine/random.h"

namespace tg {

TaskLayout parse_task_layout(const std::string& name) {
  if (name == "sequence") return TaskLayout::sequence;
  if (name == "pair") return TaskLayout::pair;
  if (name == "interleaved") return TaskLayout::interleaved;
  throw Error(fmt::format("task layout '{}': expected sequence, interleaved or pair", name));
}

const char* task_layout_name(TaskLayout layout) {
  switch (layout) {
    case TaskLayout::sequence: return "sequence";
    case TaskLayout::interleaved: return "interleaved";
    case TaskLayout::pair: return "pair";
  }
  return "?";
}

const std::vector<std::string>& task_names() {
  static const std::vector<std::string> names = {"a+b", "a-b", "a*b", "a*a-b", "a*c+b*d-e"};
  return names;
}

std::int64_t default_modulus(const std::string& task) { return task == "a*c+b*d-e" ? 7 : 97; }

namespace {

std::int64_t mod(std::int64_t x, std::int64_t p) { return ((x % p) + p) % p; }

void add_example(Dataset& d, const std::vector<std::int64_t>& tokens, std::int64_t answer) {
  for (std::int64_t t : tokens) d.inputs.push_back(static_cast<std::int32_t>(t));
  d.targets.push_back(static_cast<std::int32_t>(answer));
}

}  // namespace

Dataset make_dataset(const std::string& task, std::int64_t p, TaskLayout layout) {
  bool known = false;
  for (const auto& n : task_names()) known = known || n == task;
  TG_CHECK(known, "task '{}': expected one of a+b, a-b, a*b, a*a-b, a*c+b*d-e", task);
  TG_CHECK(p >= 2 && p <= 4096, "task {}: modulus {} must lie in [2, 4096]", task, p);
  Dataset d;
  d.task = task;
  d.modulus = p;
  d.layout = layout;
  const bool binary = task == "a+b" || task == "a-b" || task == "a*b";
  auto binary_result = [&](std::int64_t a, std::int64_t b) {
    return task == "a+b" ? mod(a + b, p) : task == "a-b" ? mod(a - b, p) : mod(a * b, p);
  };

  if (layout == TaskLayout::pair) {
    TG_CHECK(binary, "task {}: the pair layout needs a task with two operands (a+b, a-b, a*b)", task);
    d.vocab = p;
    d.seq_len = 2;
    for (std::int64_t a = 0; a < p; ++a)
      for (std::int64_t b = 0; b < p; ++b) add_example(d, {a, b}, binary_result(a, b));
    return d;
  }

  // Both layouts enumerate the same operand tuples in the same order, so a seed splits them alike and
  // only the positions of the tokens differ.
  const bool interleaved = layout == TaskLayout::interleaved;
  if (binary) {
    const std::int64_t op = p, eq = p + 1;  // the operator token, then "="
    d.vocab = p + 2;
    d.seq_len = 4;
    for (std::int64_t a = 0; a < p; ++a)
      for (std::int64_t b = 1; b < p; ++b) {
        add_example(d, interleaved ? std::vector{a, op, b, eq} : std::vector{a, b, op, eq}, binary_result(a, b));
      }
  } else if (task == "a*a-b") {
    const std::int64_t times = p, minus = p + 1, eq = p + 2;
    d.vocab = p + 3;
    d.seq_len = 6;
    for (std::int64_t a = 0; a < p; ++a)
      for (std::int64_t b = 1; b < p; ++b) {
        add_example(d, interleaved ? std::vector{a, times, a, minus, b, eq} : std::vector{a, a, b, times, minus, eq},
                    mod(a * a - b, p));
      }
  } else {  // a*c+b*d-e
    const std::int64_t times = p, plus = p + 1, minus = p + 2, eq = p + 3;
    d.vocab = p + 4;
    d.seq_len = 10;
    for (std::int64_t a = 0; a < p; ++a)
      for (std::int64_t c = 1; c < p; ++c)
        for (std::int64_t b = 0; b < p; ++b)
          for (std::int64_t dd = 1; dd < p; ++dd)
            for (std::int64_t e = 0; e < p; ++e) {
              // interleaved: "a * b + c * d - e =" answered a*c + b*d - e, as the official NeuralGrok code
              // writes this task (with a, b in [0, p) and c, d in [1, p), as here).
              add_example(d,
                          interleaved ? std::vector{a, times, b, plus, c, times, dd, minus, e, eq}
                                      : std::vector{a, c, b, dd, e, times, plus, times, minus, eq},
                          mod(a * c + b * dd - e, p));
            }
  }
  return d;
}

Split split_dataset(std::int64_t size, double train_fraction, double outer_fraction, std::uint64_t seed) {
  TG_CHECK(train_fraction > 0.0 && train_fraction < 1.0, "split: train fraction {} must lie in (0, 1)", train_fraction);
  TG_CHECK(outer_fraction >= 0.0 && outer_fraction < train_fraction,
           "split: outer fraction {} must lie in [0, train fraction {})", outer_fraction, train_fraction);
  const auto n_train = static_cast<std::int64_t>(std::floor(train_fraction * static_cast<double>(size)));
  const auto n_outer = static_cast<std::int64_t>(std::floor(outer_fraction * static_cast<double>(size)));
  TG_CHECK(n_train - n_outer >= 1 && size - n_train >= 1,
           "split: {} examples with train fraction {} and outer fraction {} leave an empty part", size, train_fraction,
           outer_fraction);
  TG_CHECK(outer_fraction == 0.0 || n_outer >= 1,
           "split: outer fraction {} of {} examples rounds to no outer example", outer_fraction, size);
  std::vector<std::int64_t> order(static_cast<std::size_t>(size));
  for (std::int64_t i = 0; i < size; ++i) order[static_cast<std::size_t>(i)] = i;
  Rng rng(seed);
  rng.shuffle(order);
  Split s;
  s.outer.assign(order.begin(), order.begin() + n_outer);
  s.train.assign(order.begin() + n_outer, order.begin() + n_train);
  s.test.assign(order.begin() + n_train, order.end());
  return s;
}

void gather_examples_host(const Dataset& data, const std::vector<std::int64_t>& indices,
                          std::vector<std::int32_t>& inputs, std::vector<std::int32_t>& targets) {
  const auto n = static_cast<std::int64_t>(indices.size());
  inputs.resize(static_cast<std::size_t>(n * data.seq_len));
  targets.resize(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t e = indices[static_cast<std::size_t>(i)];
    TG_CHECK(e >= 0 && e < data.size(), "gather_examples: example {} is outside the dataset of {}", e, data.size());
    for (std::int64_t t = 0; t < data.seq_len; ++t) {
      inputs[static_cast<std::size_t>(i * data.seq_len + t)] =
          data.inputs[static_cast<std::size_t>(e * data.seq_len + t)];
    }
    targets[static_cast<std::size_t>(i)] = data.targets[static_cast<std::size_t>(e)];
  }
}

void gather_examples(const Dataset& data, const std::vector<std::int64_t>& indices, Device device, Tensor& inputs,
                     Tensor& targets) {
  const auto n = static_cast<std::int64_t>(indices.size());
  std::vector<std::int32_t> in, out;
  gather_examples_host(data, indices, in, out);
  inputs = Tensor::from_vector(in, {n, data.seq_len}, device);
  targets = Tensor::from_vector(out, {n}, device);
}

}  // namespace tg
