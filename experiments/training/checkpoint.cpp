#include "experiments/training/checkpoint.h"

#include <fmt/format.h>

#include <array>
#include <cmath>
#include <filesystem>

#include "engine/error.h"
#include "engine/safetensors.h"

namespace tg {

namespace {

constexpr const char* kCheckpointFormat = "tapegrok-run-checkpoint-v1";

RunProgress progress_from_json(const nlohmann::json& j) {
  RunProgress p;
  p.step = j.at("step").get<std::int64_t>();
  p.wall_seconds = j.at("wall_seconds").get<double>();
  p.first_train_95 = j.at("first_train_95").get<std::int64_t>();
  p.first_test_95 = j.at("first_test_95").get<std::int64_t>();
  p.first_test_99 = j.at("first_test_99").get<std::int64_t>();
  p.last_test_acc = j.at("last_test_acc").get<double>();
  p.last_train_acc = j.at("last_train_acc").get<double>();
  p.last_test_loss = j.at("last_test_loss").get<double>();
  p.last_train_loss = j.at("last_train_loss").get<double>();
  // Absent from checkpoints written before they were kept: the evaluation window restarts there.
  p.train_loss_sum = j.value("train_loss_sum", 0.0);
  p.train_acc_sum = j.value("train_acc_sum", 0.0);
  p.steps_since_eval = j.value("steps_since_eval", std::int64_t{0});
  p.last_grad_norm = j.value("last_grad_norm", 0.0);
  p.last_lr = j.value("last_lr", 0.0);
  return p;
}

// 64-bit words stored as pairs of i32 (safetensors has no u64 in our dtype set).
Tensor words_to_tensor(const std::array<std::uint64_t, 4>& words) {
  std::vector<std::int32_t> v;
  for (std::uint64_t w : words) {
    v.push_back(static_cast<std::int32_t>(static_cast<std::uint32_t>(w & 0xFFFFFFFFu)));
    v.push_back(static_cast<std::int32_t>(static_cast<std::uint32_t>(w >> 32)));
  }
  return Tensor::from_vector(v, {8});
}

std::array<std::uint64_t, 4> tensor_to_words(const Tensor& t) {
  const auto v = t.to_vector<std::int32_t>();
  std::array<std::uint64_t, 4> words{};
  for (std::size_t i = 0; i < 4; ++i) {
    words[i] = static_cast<std::uint64_t>(static_cast<std::uint32_t>(v[2 * i])) |
               (static_cast<std::uint64_t>(static_cast<std::uint32_t>(v[2 * i + 1])) << 32);
  }
  return words;
}

std::string metadata_at(const SafetensorsFile& file, const std::string& path, const std::string& key) {
  auto it = file.metadata.find(key);
  TG_CHECK(it != file.metadata.end(), "checkpoint {}: metadata entry '{}' is missing", path, key);
  return it->second;
}

nlohmann::json parse_json_metadata(const SafetensorsFile& file, const std::string& path, const std::string& key) {
  try {
    return nlohmann::json::parse(metadata_at(file, path, key));
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("checkpoint {}: metadata entry '{}' is not valid JSON ({})", path, key, e.what()));
  }
}

}  // namespace

nlohmann::json progress_to_json(const RunProgress& p) {
  return {{"step", p.step},
          {"wall_seconds", p.wall_seconds},
          {"first_train_95", p.first_train_95},
          {"first_test_95", p.first_test_95},
          {"first_test_99", p.first_test_99},
          {"last_test_acc", p.last_test_acc},
          {"last_train_acc", p.last_train_acc},
          {"last_test_loss", p.last_test_loss},
          {"last_train_loss", p.last_train_loss},
          {"train_loss_sum", p.train_loss_sum},
          {"train_acc_sum", p.train_acc_sum},
          {"steps_since_eval", p.steps_since_eval},
          {"last_grad_norm", p.last_grad_norm},
          {"last_lr", p.last_lr}};
}

void save_run_checkpoint(const std::string& path, const RunState& run) {
  const ParameterTable& params = run.params;
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (std::size_t i = 0; i < params.size(); ++i) tensors.emplace_back(params.name(i), params[i]);
  for (const auto& [key, buffer] : run.optimizer.state()) tensors.emplace_back("optimizer." + key, buffer);
  const BatchSampler::State s = run.sampler.state();
  std::vector<std::int32_t> order(s.order.begin(), s.order.end());
  tensors.emplace_back("sampler.order", Tensor::from_vector(order, {static_cast<std::int64_t>(order.size())}));
  tensors.emplace_back("sampler.rng", words_to_tensor(s.rng));
  std::map<std::string, std::string> metadata = {
      {"format", kCheckpointFormat},
      {"config", to_json(run.config).dump()},
      {"progress", progress_to_json(run.progress).dump()},
      {"optimizer", run.optimizer.name()},
      {"optimizer.steps", std::to_string(run.optimizer.steps_taken())},
      {"sampler.cursor", std::to_string(s.cursor)},
      {"sampler.epoch", std::to_string(s.epoch)},
  };
  for (const auto& method : run.methods) {
    MethodCheckpoint part = method->checkpoint();
    for (auto& entry : part.tensors) tensors.push_back(std::move(entry));
    metadata.merge(part.metadata);
  }
  save_safetensors(path, tensors, metadata);
}

std::string kept_checkpoint_name(std::int64_t step) { return fmt::format("checkpoint_step{:07d}.safetensors", step); }

void keep_checkpoint(const std::string& path, const std::string& kept) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::remove(kept, ec);  // the same step saved twice (the last periodic save and the final one)
  fs::create_hard_link(path, kept, ec);
  if (ec) fs::copy_file(path, kept, ec);
  TG_CHECK(!ec, "--keep-checkpoints: cannot keep {} as {}: {}", path, kept, ec.message());
}

TrainConfig config_from_checkpoint(const std::string& path) {
  const SafetensorsFile file = load_safetensors(path);
  TG_CHECK(metadata_at(file, path, "format") == kCheckpointFormat,
           "checkpoint {}: not a tapegrok run checkpoint (format '{}')", path, metadata_at(file, path, "format"));
  return train_config_from_json(parse_json_metadata(file, path, "config"));
}

void load_run_checkpoint(const std::string& path, const RunState& run) {
  const SafetensorsFile file = load_safetensors(path);
  TG_CHECK(metadata_at(file, path, "format") == kCheckpointFormat,
           "checkpoint {}: not a tapegrok run checkpoint (format '{}')", path, metadata_at(file, path, "format"));
  const TrainConfig& config = run.config;
  const ParameterTable& params = run.params;
  // Everything that shapes the computation must match this run's settings.
  const TrainConfig saved = train_config_from_json(parse_json_metadata(file, path, "config"));
  auto same = [&](const char* what, auto a, auto b) {
    TG_CHECK(a == b, "checkpoint {}: it was written with {} = {} but this run has {}", path, what, fmt::to_string(a),
             fmt::to_string(b));
  };
  same("task", saved.task, config.task);
  same("modulus", saved.resolved_modulus(), config.resolved_modulus());
  same("layout", saved.layout, config.layout);
  same("train_fraction", saved.train_fraction, config.train_fraction);
  same("outer_fraction", saved.outer_fraction, config.outer_fraction);
  same("seed", saved.seed, config.seed);
  same("split seed", saved.resolved_split_seed(), config.resolved_split_seed());
  same("optimizer", metadata_at(file, path, "optimizer"), std::string(run.optimizer.name()));
  same("batch_size", saved.batch_size, config.batch_size);
  // The architecture: heads and the block variant change the computation without changing any shape.
  same("model", saved.model, config.model);
  same("layers", saved.layers, config.layers);
  same("width", saved.width, config.width);
  same("heads", saved.heads, config.heads);
  same("block", saved.block, config.block);
  same("embed_dim", saved.embed_dim, config.embed_dim);
  same("fnn_bias", saved.fnn_bias, config.fnn_bias);
  same("embedding_rank", saved.embedding_rank, config.embedding_rank);
  same("dtype", saved.dtype, config.dtype);
  same("loss", saved.loss, config.loss);
  same("method", saved.method, config.method);

  for (std::size_t i = 0; i < params.size(); ++i) expect_tensor(file, params.name(i), params.dtype(), params[i].shape());
  std::map<std::string, Tensor> optimizer_state;
  for (const auto& [key, buffer] : run.optimizer.state()) {
    expect_tensor(file, "optimizer." + key, buffer.dtype(), buffer.shape());
    optimizer_state[key] = file.at("optimizer." + key);
  }
  expect_tensor(file, "sampler.rng", DType::i32, {8});
  const Tensor& order_tensor = file.at("sampler.order");
  TG_CHECK(order_tensor.dtype() == DType::i32 && order_tensor.dim() == 1,
           "checkpoint {}: tensor 'sampler.order' must be i32 [n], got {}", path, order_tensor.str());
  BatchSampler::State s;
  s.rng = tensor_to_words(file.at("sampler.rng"));
  for (std::int32_t v : order_tensor.to_vector<std::int32_t>()) s.order.push_back(v);
  s.cursor = file.metadata_integer("sampler.cursor");
  s.epoch = file.metadata_integer("sampler.epoch");
  const std::int64_t optimizer_steps = file.metadata_integer("optimizer.steps");
  RunProgress progress;
  try {
    progress = progress_from_json(parse_json_metadata(file, path, "progress"));
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("checkpoint {}: metadata entry 'progress' is incomplete ({})", path, e.what()));
  }
  // A step count below zero would run warm-up backwards (negative learning rates).
  TG_CHECK(progress.step >= 0 && std::isfinite(progress.wall_seconds) && progress.wall_seconds >= 0 &&
               progress.steps_since_eval >= 0 && progress.steps_since_eval <= progress.step,
           "checkpoint {}: progress has a negative step ({}) or wall time ({})", path, progress.step,
           progress.wall_seconds);
  std::vector<std::function<void()>> method_loads;
  for (const auto& method : run.methods) method_loads.push_back(method->restore(file, path));

  // All checks passed: apply. (The sampler validates its part before taking it.)
  run.sampler.set_state(s);
  for (const auto& load : method_loads) load();
  run.optimizer.load_state(optimizer_state, optimizer_steps);
  for (std::size_t i = 0; i < params.size(); ++i) {
    Tensor p = params[i];
    p.copy_from_(file.at(params.name(i)));
  }
  run.progress = progress;
}

}  // namespace tg
