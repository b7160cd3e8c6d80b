#include "experiments/trainer.h"

#include <fmt/format.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>

#include "engine/backend.h"
#include "engine/error.h"
#include "engine/ops.h"
#include "engine/safetensors.h"
#include "experiments/model_factory.h"
#include "experiments/run_log.h"
#include "optim/gradient_transforms.h"

namespace tg {

namespace {

constexpr const char* kCheckpointFormat = "tapegrok-run-checkpoint-v1";

// Sync-free mode: replayable steps of each batch size run eagerly this many times before the next one
// is captured (the first run initialises cuBLAS, loads the kernels and fills the allocator's cache).
constexpr std::int64_t kEagerStepsPerShape = 1;
// Most step statistics kept on the device between reads (12 bytes a step in f32).
constexpr std::int64_t kMaxPendingSteps = 65536;

// Independent random streams derived from the one run seed.
std::uint64_t stream_seed(std::uint64_t seed, std::uint64_t stream) { return seed * 4 + stream; }

std::int64_t count_correct(const Tensor& logits, const Tensor& targets) {
  const std::vector<std::int32_t> predicted = argmax(logits).to_vector<std::int32_t>();
  const std::vector<std::int32_t> wanted = targets.to_vector<std::int32_t>();
  std::int64_t correct = 0;
  for (std::size_t i = 0; i < wanted.size(); ++i) correct += predicted[i] == wanted[i];
  return correct;
}

nlohmann::json progress_to_json(const RunProgress& p) {
  return {{"step", p.step},
          {"wall_seconds", p.wall_seconds},
          {"first_train_95", p.first_train_95},
          {"first_test_95", p.first_test_95},
          {"first_test_99", p.first_test_99},
          {"last_test_acc", p.last_test_acc},
          {"last_train_acc", p.last_train_acc},
          {"last_test_loss", p.last_test_loss},
          {"last_train_loss", p.last_train_loss}};
}

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

Trainer::Trainer(TrainConfig config, bool restoring) : config_(std::move(config)) {
  config_.validate();
  device_ = parse_device(config_.device);
  dtype_ = config_.dtype == "f64" ? DType::f64 : DType::f32;
  TG_CHECK(dtype_ == DType::f32 || device_.is_cpu(), "--dtype f64 runs on the CPU only (device {})", device_.str());
  data_ = make_dataset(config_.task, config_.resolved_modulus(), parse_task_layout(config_.layout));
  split_ = split_dataset(data_.size(), config_.train_fraction, config_.outer_fraction, stream_seed(config_.seed, 0));
  model_ = make_model(config_, data_.vocab, data_.seq_len);
  params_ = ParameterTable(model_->parameter_specs(), dtype_, device_);
  Rng init_rng(stream_seed(config_.seed, 1));
  model_->initialize(params_, init_rng);
  apply_weight_loading(config_, *model_, params_, init_rng, /*load_files=*/!restoring);
  if (config_.optimizer == "sgd") {
    optimizer_ = make_sgd(params_, {config_.momentum, config_.weight_decay});
  } else {
    optimizer_ = make_adam(params_, {config_.beta1, config_.beta2, config_.eps, config_.weight_decay,
                                     config_.optimizer == "adamw"});
  }
  sampler_ = std::make_unique<BatchSampler>(split_.train, config_.batch_size, stream_seed(config_.seed, 2));
  if (config_.method == "grokfast-ema") {
    filter_ = make_grokfast_ema(params_, {config_.grokfast_alpha, config_.grokfast_lambda > 0 ? config_.grokfast_lambda : 2.0});
  } else if (config_.method == "grokfast-ma") {
    filter_ = make_grokfast_ma(params_, {config_.grokfast_window, config_.grokfast_lambda > 0 ? config_.grokfast_lambda : 5.0});
  }
  if (config_.method == "neuralgrok") {
    Rng amp_rng(stream_seed(config_.seed, 3));
    neuralgrok_ = std::make_unique<NeuralGrok>(config_, params_, amp_rng);
    gather_examples(data_, split_.outer, device_, outer_ids_, outer_targets_);
  }

  const bool unrolled = neuralgrok_ && config_.meta_grad == "unrolled" && neuralgrok_->updates_amplifier();
  sync_free_ = config_.cuda_graph && !unrolled;
  use_graphs_ = sync_free_ && device_.is_cuda();
  if (sync_free_) {
    // The sync-free step skips the ops' device-to-host range checks of ids and targets
    // (IdsCheckedGuard): check the whole dataset here, once. Every model outputs [B, vocab] logits.
    for (std::size_t i = 0; i < data_.inputs.size(); ++i) {
      TG_CHECK(data_.inputs[i] >= 0 && data_.inputs[i] < data_.vocab,
               "task {}: input id {} at position {} is outside the vocabulary [0, {})", data_.task, data_.inputs[i], i,
               data_.vocab);
    }
    for (std::size_t i = 0; i < data_.targets.size(); ++i) {
      TG_CHECK(data_.targets[i] >= 0 && data_.targets[i] < data_.vocab,
               "task {}: target {} of example {} is outside the vocabulary [0, {})", data_.task, data_.targets[i], i,
               data_.vocab);
    }
    batch_ids_ = Tensor::zeros({config_.batch_size, data_.seq_len}, DType::i32, device_);
    batch_targets_ = Tensor::zeros({config_.batch_size}, DType::i32, device_);
    const auto scalars = static_cast<std::int64_t>(optimizer_->device_scalars(config_.lr).size());
    step_scalars_ = Tensor::zeros({scalars}, dtype_, device_);
    stats_ = StepStatsRing(std::min(eval_interval(), kMaxPendingSteps), dtype_, device_);
    // AGE of an evaluation step's raw and transformed gradient, written on the device by the step and
    // read after it (gradient_entropy_on_device's layout: one value per tensor and per gap).
    const auto pieces = 2 * static_cast<std::int64_t>(params_.size()) - 1;
    age_raw_slot_ = Tensor::zeros({pieces}, dtype_, device_);
    age_transformed_slot_ = Tensor::zeros({pieces}, dtype_, device_);
  }
}

std::string Trainer::sync_free_notice() const {
  if (!config_.cuda_graph) return "";
  if (!sync_free_) {
    return "--cuda-graph: --meta-grad unrolled records its inner steps on the tape across a window and reads values "
           "on the host, so its steps run the normal (synchronising) path";
  }
  if (!use_graphs_) {
    return fmt::format("--cuda-graph on {}: CUDA graphs need a GPU, so steps run eagerly; they still never wait for "
                       "the device, and their statistics are read when logged",
                       device_.str());
  }
  if (config_.method == "grokfast-ma") {
    return fmt::format("--cuda-graph on {}: --method grokfast-ma moves its window slot every step, so no step can be "
                       "replayed from a graph; steps run eagerly without waiting for the device",
                       device_.str());
  }
  std::string eager = "the first steps of each kind (batch size, evaluation step with AGE metrics";
  if (neuralgrok_ && neuralgrok_->updates_amplifier()) {
    eager += fmt::format(", every {}th step with NeuralGrok's meta step", config_.meta_every);
  }
  eager += "), each of which then replays a graph of its own";
  return fmt::format("--cuda-graph on {}: each step replays a captured CUDA graph, except (eager): {}", device_.str(),
                     eager);
}

std::int64_t Trainer::eval_interval() const {
  return config_.eval_every > 0 ? config_.eval_every : sampler_->batches_per_epoch();
}

StepStats Trainer::step(bool with_entropy) {
  if (sync_free_) return step_sync_free(with_entropy);
  Tensor ids, targets;
  gather_examples(data_, sampler_->next(), device_, ids, targets);
  const double lr = warmup_lr(config_.lr, progress_.step, config_.warmup_steps);

  if (neuralgrok_ && config_.meta_grad == "unrolled" && neuralgrok_->updates_amplifier()) {
    // The inner step is recorded within the current window (its tape lives across steps).
    const InnerStepStats inner = neuralgrok_->unrolled_step(*model_, params_, *optimizer_, ids, targets, lr,
                                                            outer_ids_, outer_targets_, with_entropy);
    ++progress_.step;
    return StepStats{inner.loss, inner.accuracy, inner.grad_norm, lr, inner.examples, inner.age_raw,
                     inner.age_transformed};
  }

  tape().clear();
  params_.zero_grad();
  Tensor logits = model_->forward(params_.values(), ids);  // [B, V]
  Tensor loss = cross_entropy(logits, targets);
  backward(loss);
  tape().clear();

  StepStats s;
  s.examples = ids.size(0);
  s.loss = loss.item();
  TG_CHECK(std::isfinite(s.loss), "training diverged at step {}: the loss is {} (lr {}, task {}); lower the "
           "learning rate or enable --clip-grad-norm", progress_.step + 1, s.loss, config_.lr, config_.task);
  s.accuracy = static_cast<double>(count_correct(logits, targets)) / static_cast<double>(s.examples);
  s.grad_norm = global_grad_norm(params_).item();
  TG_CHECK(std::isfinite(s.grad_norm), "training diverged at step {}: the gradient norm is {} (loss {})",
           progress_.step + 1, s.grad_norm, s.loss);

  if (with_entropy) s.age_raw = gradient_entropy(params_);
  if (neuralgrok_) {
    // Every T-th step, the amplifier first learns from this step's raw gradient (lookahead), then
    // rewrites the gradient with its updated parameters.
    if (neuralgrok_->updates_amplifier() && (progress_.step + 1) % config_.meta_every == 0) {
      neuralgrok_->prepare_meta_step();
      neuralgrok_->meta_step_lookahead(*model_, params_, outer_ids_, outer_targets_, config_.lr);
      neuralgrok_->check_outer_loss();
    }
    neuralgrok_->transform(params_);
  }
  if (filter_) filter_->apply(params_);
  if (config_.grad_normalize > 0) normalize_grads_per_tensor(params_, config_.grad_normalize);
  if (with_entropy) s.age_transformed = gradient_entropy(params_);  // what the optimizer gets, before clipping
  // Clipping happens inside the optimizer's pass over the buffers (one pass, the same result).
  const GradClip clip = config_.clip_grad_norm > 0 ? deferred_clip_grad_norm(params_, config_.clip_grad_norm) : GradClip{};
  s.lr = lr;
  optimizer_->step(params_, s.lr, clip);
  ++progress_.step;
  return s;
}

// ---------------------------------------------------------------- sync-free steps

bool Trainer::replayable() const { return !filter_ || filter_->replayable(); }

StepStats Trainer::step_sync_free(bool with_entropy) {
  const std::vector<std::int64_t> batch = sampler_->next();
  const auto n = static_cast<std::int64_t>(batch.size());
  const double lr = warmup_lr(config_.lr, progress_.step, config_.warmup_steps);

  // Everything that changes from step to step goes to fixed device buffers, before the device work.
  std::vector<std::int32_t> ids, targets;
  gather_examples_host(data_, batch, ids, targets);
  Backend& be = backend_for(device_);
  be.copy_from_host_async(batch_ids_.raw_data(), ids.data(), ids.size() * sizeof(std::int32_t));
  be.copy_from_host_async(batch_targets_.raw_data(), targets.data(), targets.size() * sizeof(std::int32_t));
  optimizer_->upload_device_scalars(lr, step_scalars_);
  batch_ids_.storage()->bump_version();
  batch_targets_.storage()->bump_version();

  const bool meta_step = neuralgrok_ && neuralgrok_->updates_amplifier() &&
                         (progress_.step + 1) % config_.meta_every == 0;
  if (meta_step) neuralgrok_->prepare_meta_step();  // the amplifier Adam's values, to the device like ours
  StepStats s;
  s.examples = n;
  s.lr = lr;
  s.on_device = true;
  s.loss = s.accuracy = s.grad_norm = std::numeric_limits<double>::quiet_NaN();
  if (use_graphs_ && replayable()) {
    ShapeGraph& g = graphs_[{n, meta_step, with_entropy}];
    if (g.graph.defined()) {
      g.graph.replay();
      // The host half of the captured step: the counters its host code advanced once, at capture.
      optimizer_->count_replayed_step();
      if (filter_) filter_->count_replayed_step();
      if (meta_step) neuralgrok_->count_replayed_meta_step();
    } else if (g.eager_steps >= kEagerStepsPerShape) {
      g.graph = CapturedGraph::capture(device_, [&] { device_step(n, with_entropy, meta_step); });
      g.graph.replay();  // capturing only recorded this step's work
    } else {
      device_step(n, with_entropy, meta_step);
      ++g.eager_steps;
    }
  } else {
    device_step(n, with_entropy, meta_step);
  }
  if (with_entropy) {  // an evaluation follows, which waits for the device anyway
    s.age_raw = read_gradient_entropy(params_, age_raw_slot_);
    s.age_transformed = read_gradient_entropy(params_, age_transformed_slot_);
  }
  stats_.commit(progress_.step + 1, n, lr);
  ++progress_.step;
  return s;
}

void Trainer::device_step(std::int64_t batch, bool with_entropy, bool meta_step) {
  HostReadGuard no_host_reads("a sync-free training step");
  const Tensor ids = batch_ids_.as_strided({batch, data_.seq_len}, {data_.seq_len, 1}, 0);  // [B, S]
  const Tensor targets = batch_targets_.as_strided({batch}, {1}, 0);                        // [B]
  tape().clear();
  params_.zero_grad();
  Tensor logits, loss;
  {
    IdsCheckedGuard checked;  // the constructor checked every id and target of the dataset
    logits = model_->forward(params_.values(), ids);  // [B, V]
    loss = cross_entropy(logits, targets);            // []
  }
  backward(loss);
  tape().clear();
  {
    // The statistics the normal step reads with .item(), written to the slot on the device instead.
    NoGradGuard no_grad;
    const Tensor& slot = stats_.slot();
    const Tensor correct = count_equal(argmax(logits), targets, dtype_);
    const Tensor norm = global_grad_norm(params_);
    for (const auto& [column, value] : {std::pair{StepStatsRing::kLoss, loss},
                                        std::pair{StepStatsRing::kCorrect, correct},
                                        std::pair{StepStatsRing::kGradNorm, norm}}) {
      Tensor cell = slot.as_strided({}, {}, column);
      cell.copy_from_(value);
    }
  }

  if (with_entropy) age_raw_slot_.copy_from_(gradient_entropy_on_device(params_));
  if (neuralgrok_) {
    if (meta_step) {
      IdsCheckedGuard checked;  // the outer set is part of the dataset the constructor checked
      neuralgrok_->meta_step_lookahead(*model_, params_, outer_ids_, outer_targets_, config_.lr);
    }
    neuralgrok_->transform(params_);
  }
  if (filter_) filter_->apply(params_);
  if (config_.grad_normalize > 0) normalize_grads_per_tensor(params_, config_.grad_normalize);
  if (with_entropy) age_transformed_slot_.copy_from_(gradient_entropy_on_device(params_));
  const GradClip clip = config_.clip_grad_norm > 0 ? deferred_clip_grad_norm(params_, config_.clip_grad_norm) : GradClip{};
  optimizer_->step_from_device(params_, step_scalars_, clip);
}

std::vector<StepStats> Trainer::read_step_stats() {
  std::vector<StepStats> out;
  if (!sync_free_) return out;
  const std::vector<StepStatsRing::Row> rows = stats_.read();
  if (rows.empty()) return out;
  // NeuralGrok's last outer loss, checked here like the steps' losses (a non-finite one earlier would
  // have reached the model's loss through the amplifier by now).
  if (neuralgrok_) neuralgrok_->check_outer_loss();
  const std::int64_t first = rows.front().step, last = rows.back().step;
  for (const StepStatsRing::Row& r : rows) {
    // The checks of the normal step, made when the values reach the host.
    TG_CHECK(std::isfinite(r.loss),
             "training diverged at step {}: the loss is {} (lr {}, task {}; found when the statistics of steps {} to "
             "{} were read from the device); lower the learning rate or enable --clip-grad-norm",
             r.step, r.loss, config_.lr, config_.task, first, last);
    TG_CHECK(std::isfinite(r.grad_norm),
             "training diverged at step {}: the gradient norm is {} (loss {}; found when the statistics of steps {} "
             "to {} were read from the device)",
             r.step, r.grad_norm, r.loss, first, last);
    StepStats s;
    s.loss = r.loss;
    s.accuracy = r.correct / static_cast<double>(r.examples);
    s.grad_norm = r.grad_norm;
    s.lr = r.lr;
    s.examples = r.examples;
    out.push_back(s);
  }
  return out;
}

EvalStats Trainer::evaluate(const std::vector<std::int64_t>& examples) const {
  NoGradGuard no_grad;
  EvalStats e;
  constexpr std::size_t kChunk = 4096;
  // Each chunk's mean loss and correct count stay on the device, [loss, correct] per chunk, and reach
  // the host in one read at the end (the normal step's sums, in the same order). Sync-free runs
  // check that nothing else is read, and skip the ops' id checks (the dataset was checked once).
  TensorList per_chunk;
  {
    std::optional<HostReadGuard> no_host_reads;
    std::optional<IdsCheckedGuard> ids_checked;
    if (sync_free_) {
      no_host_reads.emplace("an evaluation");
      ids_checked.emplace();
    }
    for (std::size_t at = 0; at < examples.size(); at += kChunk) {
      std::vector<std::int64_t> chunk(examples.begin() + static_cast<std::ptrdiff_t>(at),
                                      examples.begin() + static_cast<std::ptrdiff_t>(std::min(at + kChunk, examples.size())));
      Tensor ids, targets;
      gather_examples(data_, chunk, device_, ids, targets);
      Tensor logits = model_->forward(params_.values(), ids);  // [n, V]
      per_chunk.push_back(reshape(cross_entropy(logits, targets), {1}));
      per_chunk.push_back(reshape(count_equal(argmax(logits), targets, dtype_), {1}));
    }
  }
  e.examples = static_cast<std::int64_t>(examples.size());
  if (e.examples > 0) {
    const Tensor both = concat(per_chunk, 0);  // [2 * chunks]
    const std::vector<double> v = dtype_ == DType::f64 ? both.to_vector<double>() : [&] {
      const std::vector<float> f = both.to_vector<float>();
      return std::vector<double>(f.begin(), f.end());
    }();
    double loss_sum = 0, correct = 0;
    for (std::size_t k = 0; 2 * k < v.size(); ++k) {
      const std::size_t at = k * kChunk;
      loss_sum += v[2 * k] * static_cast<double>(std::min(kChunk, examples.size() - at));
      correct += v[2 * k + 1];
    }
    e.loss = loss_sum / static_cast<double>(e.examples);
    e.accuracy = correct / static_cast<double>(e.examples);
  }
  return e;
}

RunProgress Trainer::run() {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(config_.run_dir, ec);
  TG_CHECK(!ec, "cannot create run directory {}: {}", config_.run_dir, ec.message());
  {
    std::ofstream out(config_.run_dir + "/config.json");
    TG_CHECK(out.good(), "cannot write {}/config.json", config_.run_dir);
    out << to_json(config_).dump(2) << "\n";
  }
  MetricsLog metrics(config_.run_dir + "/metrics.jsonl");
  ProgressDisplay display(config_.progress, config_.max_steps);
  const std::string checkpoint_path = config_.run_dir + "/checkpoint.safetensors";
  const std::int64_t every = eval_interval();

  const std::string notice = sync_free_notice();
  if (!notice.empty()) fmt::print("{}\n", notice);

  const double start = seconds_since_start();
  const double wall_before = progress_.wall_seconds;
  const std::int64_t step_before = progress_.step;
  double loss_sum = 0, acc_sum = 0;
  std::int64_t since_eval = 0;
  double grad_norm = 0, lr = 0;
  // Sync-free mode: the steps' statistics reach the host here, summed in step order as the normal
  // mode sums them after each step (and checked for divergence).
  auto absorb_device_stats = [&] {
    for (const StepStats& r : read_step_stats()) {
      loss_sum += r.loss;
      acc_sum += r.accuracy;
      grad_norm = r.grad_norm;
    }
  };

  while (progress_.step < config_.max_steps) {
    const bool eval_after = (progress_.step + 1) % every == 0 || progress_.step + 1 == config_.max_steps;
    const StepStats s = step(eval_after);
    if (!s.on_device) {
      loss_sum += s.loss;
      acc_sum += s.accuracy;
      grad_norm = s.grad_norm;
    }
    lr = s.lr;
    ++since_eval;
    const double elapsed = seconds_since_start() - start;
    const double rate = static_cast<double>(progress_.step - step_before) / std::max(elapsed, 1e-9);
    progress_.wall_seconds = wall_before + elapsed;
    // Sync-free steps leave their loss on the device: the live line shows the last logged one.
    display.on_step(progress_.step, s.on_device ? progress_.last_train_loss : s.loss, rate);

    const bool last = progress_.step == config_.max_steps;
    bool stop = false;
    if (progress_.step % every == 0 || last) {
      absorb_device_stats();
      const EvalStats test = evaluate(split_.test);
      const double train_loss = loss_sum / static_cast<double>(since_eval);
      const double train_acc = acc_sum / static_cast<double>(since_eval);
      loss_sum = acc_sum = 0;
      since_eval = 0;
      progress_.last_test_acc = test.accuracy;
      progress_.last_test_loss = test.loss;
      progress_.last_train_acc = train_acc;
      progress_.last_train_loss = train_loss;
      if (progress_.first_train_95 < 0 && train_acc >= 0.95) progress_.first_train_95 = progress_.step;
      if (progress_.first_test_95 < 0 && test.accuracy >= 0.95) progress_.first_test_95 = progress_.step;
      if (progress_.first_test_99 < 0 && test.accuracy >= 0.99) progress_.first_test_99 = progress_.step;
      progress_.wall_seconds = wall_before + (seconds_since_start() - start);
      nlohmann::json record = {{"step", progress_.step},
                               {"epoch", sampler_->epoch()},
                               {"train_loss", train_loss},
                               {"train_acc", train_acc},
                               {"test_loss", test.loss},
                               {"test_acc", test.accuracy},
                               {"lr", lr},
                               {"grad_norm", grad_norm},
                               {"wall_time", progress_.wall_seconds}};
      if (!split_.outer.empty()) {
        const EvalStats outer = evaluate(split_.outer);
        record["outer_loss"] = outer.loss;
        record["outer_acc"] = outer.accuracy;
      }
      if (neuralgrok_) {
        record["meta_steps"] = neuralgrok_->meta_steps();
        record["meta_outer_loss"] = neuralgrok_->last_outer_loss();
      }
      // Complexity metrics (papers.md): AGE of the raw and the transformed gradient, AWE of the weights.
      auto per_tensor = [](const EntropyStats& e) {
        nlohmann::json j = nlohmann::json::object();
        for (std::size_t i = 0; i < e.names.size() && i < e.per_tensor.size(); ++i) j[e.names[i]] = e.per_tensor[i];
        return j;
      };
      const EntropyStats awe = weight_entropy(params_);
      record["age_raw"] = s.age_raw.total;
      record["age_transformed"] = s.age_transformed.total;
      record["awe"] = awe.total;
      record["age_raw_per_tensor"] = per_tensor(s.age_raw);
      record["age_transformed_per_tensor"] = per_tensor(s.age_transformed);
      record["awe_per_tensor"] = per_tensor(awe);
      metrics.write(record);
      display.on_eval(progress_.step, train_loss, train_acc, test.loss, test.accuracy, rate);
      stop = config_.stop_at_test_acc > 0 && test.accuracy >= config_.stop_at_test_acc;
    }
    if (config_.checkpoint_every > 0 && progress_.step % config_.checkpoint_every == 0) {
      absorb_device_stats();  // a diverged run must stop before it overwrites its checkpoint
      save_checkpoint(checkpoint_path);
    }
    if (stop) break;
  }
  display.finish();
  save_checkpoint(checkpoint_path);
  if (neuralgrok_) neuralgrok_->save_amplifier(config_.run_dir + "/amplifier.safetensors");

  nlohmann::json summary = progress_to_json(progress_);
  const double trained = progress_.wall_seconds;
  summary["steps_per_second"] = trained > 0 ? static_cast<double>(progress_.step) / trained : 0.0;
  summary["device"] = device_.str();
  summary["task"] = config_.task;
  std::ofstream(config_.run_dir + "/summary.json") << summary.dump(2) << "\n";
  return progress_;
}

// ---------------------------------------------------------------- checkpoints

void Trainer::save_checkpoint(const std::string& path) const {
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (std::size_t i = 0; i < params_.size(); ++i) tensors.emplace_back(params_.name(i), params_[i]);
  for (const auto& [key, buffer] : optimizer_->state()) tensors.emplace_back("optimizer." + key, buffer);
  const BatchSampler::State s = sampler_->state();
  std::vector<std::int32_t> order(s.order.begin(), s.order.end());
  tensors.emplace_back("sampler.order", Tensor::from_vector(order, {static_cast<std::int64_t>(order.size())}));
  tensors.emplace_back("sampler.rng", words_to_tensor(s.rng));
  if (neuralgrok_) {
    for (auto& entry : neuralgrok_->checkpoint_tensors()) tensors.push_back(std::move(entry));
  }
  if (filter_) {
    for (const auto& [key, buffer] : filter_->state()) tensors.emplace_back("filter." + key, buffer);
  }
  std::map<std::string, std::string> metadata = {
      {"format", kCheckpointFormat},
      {"config", to_json(config_).dump()},
      {"progress", progress_to_json(progress_).dump()},
      {"optimizer", optimizer_->name()},
      {"optimizer.steps", std::to_string(optimizer_->steps_taken())},
      {"sampler.cursor", std::to_string(s.cursor)},
      {"sampler.epoch", std::to_string(s.epoch)},
  };
  if (neuralgrok_) metadata.merge(neuralgrok_->checkpoint_metadata());
  if (filter_) metadata["filter.steps"] = std::to_string(filter_->steps());
  save_safetensors(path, tensors, metadata);
}

TrainConfig config_from_checkpoint(const std::string& path) {
  const SafetensorsFile file = load_safetensors(path);
  TG_CHECK(metadata_at(file, path, "format") == kCheckpointFormat,
           "checkpoint {}: not a tapegrok run checkpoint (format '{}')", path, metadata_at(file, path, "format"));
  return train_config_from_json(parse_json_metadata(file, path, "config"));
}

void Trainer::load_checkpoint(const std::string& path) {
  const SafetensorsFile file = load_safetensors(path);
  TG_CHECK(metadata_at(file, path, "format") == kCheckpointFormat,
           "checkpoint {}: not a tapegrok run checkpoint (format '{}')", path, metadata_at(file, path, "format"));
  // Everything that shapes the computation must match this run's settings.
  const TrainConfig saved = train_config_from_json(parse_json_metadata(file, path, "config"));
  auto same = [&](const char* what, auto a, auto b) {
    TG_CHECK(a == b, "checkpoint {}: it was written with {} = {} but this run has {}", path, what, fmt::to_string(a),
             fmt::to_string(b));
  };
  same("task", saved.task, config_.task);
  same("modulus", saved.resolved_modulus(), config_.resolved_modulus());
  same("layout", saved.layout, config_.layout);
  same("train_fraction", saved.train_fraction, config_.train_fraction);
  same("outer_fraction", saved.outer_fraction, config_.outer_fraction);
  same("seed", saved.seed, config_.seed);
  same("optimizer", metadata_at(file, path, "optimizer"), std::string(optimizer_->name()));
  same("batch_size", saved.batch_size, config_.batch_size);
  same("method", saved.method, config_.method);

  for (std::size_t i = 0; i < params_.size(); ++i) expect_tensor(file, params_.name(i), params_.dtype(), params_[i].shape());
  std::map<std::string, Tensor> optimizer_state;
  for (const auto& [key, buffer] : optimizer_->state()) {
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
  std::int64_t optimizer_steps = 0;
  try {
    s.cursor = std::stoll(metadata_at(file, path, "sampler.cursor"));
    s.epoch = std::stoll(metadata_at(file, path, "sampler.epoch"));
    optimizer_steps = std::stoll(metadata_at(file, path, "optimizer.steps"));
  } catch (const std::logic_error&) {
    throw Error(fmt::format("checkpoint {}: a sampler or optimizer counter in the metadata is not an integer", path));
  }
  RunProgress progress;
  try {
    progress = progress_from_json(parse_json_metadata(file, path, "progress"));
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("checkpoint {}: metadata entry 'progress' is incomplete ({})", path, e.what()));
  }

  std::map<std::string, Tensor> filter_state;
  std::int64_t filter_steps = 0;
  if (filter_) {
    for (const auto& [key, buffer] : filter_->state()) {
      expect_tensor(file, "filter." + key, buffer.dtype(), buffer.shape());
      filter_state[key] = file.at("filter." + key);
    }
    try {
      filter_steps = std::stoll(metadata_at(file, path, "filter.steps"));
    } catch (const std::logic_error&) {
      throw Error(fmt::format("checkpoint {}: metadata entry 'filter.steps' is not an integer", path));
    }
  }

  // All checks passed: apply. (The sampler and the amplifier validate their parts before taking them.)
  // Sync-free mode: graphs are captured afresh and statistics of steps before the load are dropped.
  graphs_.clear();
  stats_.clear();
  if (neuralgrok_) neuralgrok_->load_checkpoint(file.tensors, file.metadata, path);
  if (filter_) filter_->load_state(filter_state, filter_steps);
  sampler_->set_state(s);
  optimizer_->load_state(optimizer_state, optimizer_steps);
  for (std::size_t i = 0; i < params_.size(); ++i) {
    Tensor p = params_[i];
    p.copy_from_(file.at(params_.name(i)));
  }
  progress_ = progress;
}

}  // namespace tg
