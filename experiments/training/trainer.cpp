#include "experiments/training/trainer.h"

#include <cblas.h>
#include <fmt/format.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>

#include "engine/backend.h"
#include "engine/build_info.h"
#include "engine/error.h"
#include "engine/ops.h"
#include "engine/safetensors.h"
#include "experiments/methods/method_factory.h"
#include "experiments/methods/neuralgrok.h"
#include "experiments/training/model_factory.h"
#include "experiments/training/run_directory.h"
#include "experiments/training/run_log.h"
#include "kernels/cpu/float_mode.h"
#include "kernels/cpu/openblas_core.h"
#include "kernels/cpu/parallel.h"
#include "optim/gradient_transforms.h"

namespace tg {

namespace {

// Sync-free mode: replayable steps of each batch size run eagerly this many times before the next one
// is captured (the first run initialises cuBLAS, loads the kernels and fills the allocator's cache).
constexpr std::int64_t kEagerStepsPerShape = 1;
// Most step statistics kept on the device between reads (12 bytes a step in f32).
constexpr std::int64_t kMaxPendingSteps = 65536;

// Independent random streams derived from the run seed (the split's from --split-seed when given, the
// same stream of that seed, so --split-seed S --seed S is the run --seed S).
std::uint64_t stream_seed(std::uint64_t seed, std::uint64_t stream) { return seed * 4 + stream; }

}  // namespace

Trainer::Trainer(TrainConfig config, bool restoring) : config_(std::move(config)) {
  config_.validate();
  device_ = parse_device(config_.device);
  dtype_ = config_.dtype == "f64" ? DType::f64 : DType::f32;
  TG_CHECK(dtype_ == DType::f32 || device_.is_cpu(), "--dtype f64 runs on the CPU only (device {})", device_.str());
  data_ = make_dataset(config_.task, config_.resolved_modulus(), parse_task_layout(config_.layout));
  split_ = split_dataset(data_.size(), config_.train_fraction, config_.outer_fraction,
                         stream_seed(config_.resolved_split_seed(), 0));
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
  Rng method_rng(stream_seed(config_.seed, 3));
  methods_ = make_gradient_methods({config_, params_, data_, split_, method_rng});

  bool records = false;
  for (const auto& m : methods_) records |= m->records_steps();
  mode_ = records ? StepMode::recorded : config_.cuda_graph ? StepMode::sync_free : StepMode::eager;
  use_graphs_ = mode_ == StepMode::sync_free && device_.is_cuda();
  if (mode_ == StepMode::sync_free) {
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
    slots_.optimizer_scalars = Tensor::zeros({scalars}, dtype_, device_);
    stats_ = StepStatsRing(std::min(eval_interval(), kMaxPendingSteps), dtype_, device_);
    // AGE of an evaluation step's raw and transformed gradient, written on the device by the step and
    // read after it (gradient_entropy_on_device's layout: one value per tensor and per gap).
    const auto pieces = 2 * static_cast<std::int64_t>(params_.size()) - 1;
    slots_.age_raw = Tensor::zeros({pieces}, dtype_, device_);
    slots_.age_transformed = Tensor::zeros({pieces}, dtype_, device_);
  }
}

std::string Trainer::sync_free_notice() const {
  if (!config_.cuda_graph) return "";
  if (mode_ == StepMode::recorded) {
    return "--cuda-graph: --meta-grad unrolled records its inner steps on the tape across a window and reads values "
           "on the host, so its steps run the normal (synchronising) path";
  }
  if (!use_graphs_) {
    return fmt::format("--cuda-graph on {}: CUDA graphs need a GPU, so steps run eagerly; they still never wait for "
                       "the device, and their statistics are read when logged",
                       device_.str());
  }
  for (const auto& m : methods_) {
    if (!m->replayable()) {
      return fmt::format("--cuda-graph on {}: --method {} cannot be replayed from a graph (its steps differ), so "
                         "steps run eagerly without waiting for the device",
                         device_.str(), m->name());
    }
  }
  std::string eager = "the first steps of each kind (batch size, evaluation step with AGE metrics";
  if (const NeuralGrok* ng = method<NeuralGrok>(); ng != nullptr && ng->updates_amplifier()) {
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
  StepInput in;
  in.step = progress_.step + 1;
  in.lr = warmup_lr(config_.lr, progress_.step, config_.warmup_steps);
  in.with_entropy = with_entropy;
  const std::vector<std::int64_t> batch = sampler_->next();
  StepStats s;
  if (mode_ == StepMode::sync_free) {
    s = step_sync_free(in, batch);
  } else {
    gather_examples(data_, batch, device_, in.ids, in.targets);
    const StepContext context{in.step, false, model_.get()};
    for (auto& m : methods_) m->prepare(context);
    s = train_step(mode_, {config_, *model_, params_, *optimizer_, methods_}, in, nullptr, &window_);
  }
  ++progress_.step;
  return s;
}

// ---------------------------------------------------------------- sync-free steps

bool Trainer::replayable() const {
  for (const auto& m : methods_) {
    if (!m->replayable()) return false;
  }
  return true;
}

StepStats Trainer::step_sync_free(const StepInput& request, const std::vector<std::int64_t>& examples) {
  const auto batch = static_cast<std::int64_t>(examples.size());
  // Everything that changes from step to step goes to fixed device buffers, before the device work.
  std::vector<std::int32_t> ids, targets;
  gather_examples_host(data_, examples, ids, targets);
  Backend& be = backend_for(device_);
  be.copy_from_host_async(batch_ids_.raw_data(), ids.data(), ids.size() * sizeof(std::int32_t));
  be.copy_from_host_async(batch_targets_.raw_data(), targets.data(), targets.size() * sizeof(std::int32_t));
  optimizer_->upload_device_scalars(request.lr, slots_.optimizer_scalars);
  batch_ids_.storage()->bump_version();
  batch_targets_.storage()->bump_version();
  StepInput in = request;
  in.ids = batch_ids_.as_strided({batch, data_.seq_len}, {data_.seq_len, 1}, 0);  // [B, S]
  in.targets = batch_targets_.as_strided({batch}, {1}, 0);                        // [B]
  slots_.stats = stats_.slot();

  const StepContext context{in.step, true, model_.get()};
  bool special = false;
  for (auto& m : methods_) {
    m->prepare(context);  // the methods' per-step uploads, outside any capture
    special |= m->special_step(context);
  }
  auto device_work = [&] {
    return train_step(StepMode::sync_free, {config_, *model_, params_, *optimizer_, methods_}, in, &slots_, nullptr);
  };
  StepStats s;
  if (use_graphs_ && replayable()) {
    ShapeGraph& g = graphs_[{batch, special, in.with_entropy}];
    if (g.graph.defined()) {
      g.graph.replay();
      // The host half of the captured step: the counters its host code advanced once, at capture.
      optimizer_->count_replayed_step();
      for (auto& m : methods_) m->count_replayed_step(context);
    } else if (g.eager_steps >= kEagerStepsPerShape) {
      g.graph = CapturedGraph::capture(device_, [&] { s = device_work(); });
      g.graph.replay();  // capturing only recorded this step's work
    } else {
      s = device_work();
      ++g.eager_steps;
    }
  } else {
    s = device_work();
  }
  s.examples = batch;
  s.lr = in.lr;
  s.on_device = true;
  s.loss = s.accuracy = s.grad_norm = std::numeric_limits<double>::quiet_NaN();
  if (in.with_entropy) {  // an evaluation follows, which waits for the device anyway
    s.age_raw = read_gradient_entropy(params_, slots_.age_raw);
    s.age_transformed = read_gradient_entropy(params_, slots_.age_transformed);
  }
  stats_.commit(in.step, batch, in.lr);
  return s;
}

void Trainer::check_finite_state() const {
  // One segmented sum per flat buffer: a NaN or inf anywhere in a tensor makes its sum non-finite.
  Backend& be = backend_for(device_);
  const auto tensors = static_cast<std::int64_t>(params_.size());
  auto check = [&](const Tensor& flat, const std::string& what) {
    Tensor sums = Tensor::empty({tensors}, dtype_, device_);
    be.segmented_reduce(ReduceOp::sum, flat, params_.offsets(), sums);
    const std::vector<double> v = sums.to(Device::cpu()).to(DType::f64).to_vector<double>();
    for (std::size_t i = 0; i < v.size(); ++i) {
      TG_CHECK(std::isfinite(v[i]),
               "training diverged by step {}: {} of tensor '{}' holds NaN or inf (lr {}); the losses stayed finite "
               "so far, so look at settings that scale the update (--grad-normalize, --amp-c, --lr)",
               progress_.step, what, params_.name(i), config_.lr);
    }
  };
  check(params_.flat_values(), "the weights");
  for (const auto& [name, buffer] : optimizer_->state()) {
    if (buffer.numel() == params_.flat_values().numel()) check(buffer, "the optimizer's " + name);
  }
}

std::vector<StepStats> Trainer::read_step_stats() {
  std::vector<StepStats> out;
  if (mode_ != StepMode::sync_free) return out;
  const std::vector<StepStatsRing::Row> rows = stats_.read();
  if (rows.empty()) return out;
  // Values the methods left on the device (NeuralGrok's last outer loss; a non-finite one earlier
  // would have reached the model's loss through the amplifier by now).
  for (const auto& m : methods_) m->check_deferred();
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
    if (mode_ == StepMode::sync_free) {
      no_host_reads.emplace("an evaluation");
      ids_checked.emplace();
    }
    for (std::size_t at = 0; at < examples.size(); at += kChunk) {
      std::vector<std::int64_t> chunk(examples.begin() + static_cast<std::ptrdiff_t>(at),
                                      examples.begin() + static_cast<std::ptrdiff_t>(std::min(at + kChunk, examples.size())));
      Tensor ids, targets;
      gather_examples(data_, chunk, device_, ids, targets);
      Tensor logits = model_->forward(params_.values(), ids);  // [n, V]
      per_chunk.push_back(reshape(training_loss(config_, logits, targets), {1}));
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
  const RunDirectory dir(config_.run_dir, resumed_);
  // The settings, and beside them what else decides the bits (README, "Determinism"): the BLAS
  // thread count partitions the GEMMs; flushing subnormals changes results below 1.2e-38; the build
  // (its commit) fixes every kernel's order of operations.
  nlohmann::json config = to_json(config_);
  config["runtime"] = {{"blas_threads", openblas_get_num_threads()}, {"cpu_kernel_threads", cpu::cpu_threads()},
                       {"openblas_core", cpu::openblas_core()}, {"flush_subnormals", cpu::flush_subnormals()},
                       {"device", device_.str()},
                       {"build", {{"commit", build_info().commit}, {"dirty", build_info().dirty}}}};
  dir.write_text("config.json", config.dump(2) + "\n");
  MetricsLog metrics(dir.file("metrics.jsonl"), resumed_ ? progress_.step : -1);
  ProgressDisplay display(config_.progress, config_.max_steps);
  const std::string checkpoint_path = dir.file("checkpoint.safetensors");
  const std::int64_t every = eval_interval();

  const std::string notice = sync_free_notice();
  if (!notice.empty()) fmt::print("{}\n", notice);

  const double start = seconds_since_start();
  const double wall_before = progress_.wall_seconds;
  const std::int64_t step_before = progress_.step;
  // The training statistics since the last evaluation live in progress_, so that a checkpoint between
  // two evaluations resumes them and the next record is the one the uninterrupted run would write.
  double& loss_sum = progress_.train_loss_sum;
  double& acc_sum = progress_.train_acc_sum;
  std::int64_t& since_eval = progress_.steps_since_eval;
  double& grad_norm = progress_.last_grad_norm;
  double& lr = progress_.last_lr;
  bool checkpoint_due = false;
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
      check_finite_state();
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
      for (const auto& m : methods_) m->log(record);
      // Complexity metrics (docs/methods.md): AGE of the raw and the transformed gradient, AWE of the weights.
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
      if (on_evaluation_) on_evaluation_(record);
      display.on_eval(progress_.step, train_loss, train_acc, test.loss, test.accuracy, rate);
      stop = config_.stop_at_test_acc > 0 && test.accuracy >= config_.stop_at_test_acc;
    }
    // A recorded window (--meta-grad unrolled) cannot be stored mid-way (its tape is not saved): its
    // checkpoint waits for the window's meta step, so that resuming continues exactly.
    checkpoint_due |= config_.checkpoint_every > 0 && progress_.step % config_.checkpoint_every == 0;
    if (checkpoint_due && !window_.open) {
      absorb_device_stats();  // a diverged run must stop before it overwrites its checkpoint
      check_finite_state();
      save_checkpoint(checkpoint_path);
      if (config_.keep_checkpoints) keep_checkpoint(checkpoint_path, dir.file(kept_checkpoint_name(progress_.step)));
      checkpoint_due = false;
    }
    if (stop) break;
  }
  display.finish();
  save_checkpoint(checkpoint_path);
  if (config_.keep_checkpoints) keep_checkpoint(checkpoint_path, dir.file(kept_checkpoint_name(progress_.step)));
  for (const auto& m : methods_) m->finish(config_.run_dir);

  nlohmann::json summary = progress_to_json(progress_);
  const double trained = progress_.wall_seconds;
  summary["steps_per_second"] = trained > 0 ? static_cast<double>(progress_.step) / trained : 0.0;
  summary["device"] = device_.str();
  summary["task"] = config_.task;
  dir.write_text("summary.json", summary.dump(2) + "\n");
  return progress_;
}

// ---------------------------------------------------------------- checkpoints

RunState Trainer::run_state() { return {config_, params_, *optimizer_, *sampler_, methods_, progress_}; }

void Trainer::save_checkpoint(const std::string& path) { save_run_checkpoint(path, run_state()); }

void Trainer::load_checkpoint(const std::string& path) {
  load_run_checkpoint(path, run_state());
  // Sync-free mode: graphs are captured afresh and statistics of steps before the load are dropped.
  // Recorded mode: the next step opens a new window from the loaded state.
  graphs_.clear();
  stats_.clear();
  window_ = RecordedWindow{};
  resumed_ = true;
}

}  // namespace tg
