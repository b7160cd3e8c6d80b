#include "experiments/cli/transfer_command.h"

#include <fmt/format.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "engine/error.h"
#include "models/token_embedding.h"

namespace tg {

// ---------------------------------------------------------------- the transfer run

namespace {

double seconds_between(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

nlohmann::json progress_json(const RunProgress& p, double batches_per_epoch, double seconds) {
  auto epochs = [&](std::int64_t s) -> nlohmann::json {
    if (s < 0) return nullptr;
    return static_cast<double>(s) / batches_per_epoch;
  };
  auto step = [](std::int64_t s) -> nlohmann::json {
    if (s < 0) return nullptr;
    return s;
  };
  nlohmann::json j = {{"steps", p.step},
                      {"epochs", static_cast<double>(p.step) / batches_per_epoch},
                      {"seconds", seconds},
                      {"training_seconds", p.wall_seconds},
                      {"final_test_acc", p.last_test_acc},
                      {"final_train_acc", p.last_train_acc},
                      {"first_train_95_step", step(p.first_train_95)},
                      {"first_test_95_step", step(p.first_test_95)},
                      {"first_test_99_step", step(p.first_test_99)},
                      {"first_test_95_epoch", epochs(p.first_test_95)}};
  if (p.first_train_95 >= 0 && p.first_test_95 >= 0) {
    j["time_gap_steps"] = p.first_test_95 - p.first_train_95;
    j["time_gap_epochs"] = static_cast<double>(p.first_test_95 - p.first_train_95) / batches_per_epoch;
  } else {
    j["time_gap_steps"] = nullptr;
    j["time_gap_epochs"] = nullptr;
  }
  return j;
}

double batches_per_epoch(const Trainer& t) {
  const auto n = static_cast<std::int64_t>(t.split().train.size());
  const std::int64_t b = t.config().batch_size;
  return static_cast<double>((n + b - 1) / b);
}

}  // namespace

nlohmann::json TransferResult::to_json() const {
  return {{"weak", progress_json(weak, weak_batches_per_epoch, weak_seconds)},
          {"target", progress_json(target, target_batches_per_epoch, target_seconds)},
          {"transfer",
           {{"mode", transfer.mode}, {"source", transfer.source}, {"vocab", transfer.vocab},
            {"weak_dim", transfer.weak_dim}, {"target_dim", transfer.target_dim}}},
          {"weak_seconds", weak_seconds},
          {"target_seconds", target_seconds},
          {"total_seconds", total_seconds}};
}

TransferResult run_transfer(TransferRun run) {
  namespace fs = std::filesystem;
  using Clock = std::chrono::steady_clock;
  TransferResult result;
  const auto start = Clock::now();
  std::error_code ec;
  fs::create_directories(run.run_dir, ec);
  TG_CHECK(!ec, "cannot create run directory {}: {}", run.run_dir, ec.message());

  // 1. the weak model
  std::string checkpoint = run.weak_checkpoint;
  if (checkpoint.empty()) {
    run.weak.run_dir = run.run_dir + "/weak";
    TG_CHECK(run.weak.init_embedding_from.empty(), "the weak model of a transfer run starts from scratch");
    Trainer weak(run.weak);
    fmt::print("weak model: {} ({} layers, width {}, embedding {}), {} parameters, {} train / {} test examples\n",
               weak.model().name(), run.weak.layers, run.weak.width,
               run.weak.embed_dim > 0 ? run.weak.embed_dim : run.weak.width, weak.params().numel(),
               weak.split().train.size(), weak.split().test.size());
    std::fflush(stdout);
    result.weak = weak.run();
    result.weak_batches_per_epoch = batches_per_epoch(weak);
    checkpoint = run.weak.run_dir + "/checkpoint.safetensors";
    fmt::print("weak model: stopped at step {} with test accuracy {:.2f}% (train {:.2f}%)\n", result.weak.step,
               100 * result.weak.last_test_acc, 100 * result.weak.last_train_acc);
  }
  const auto weak_end = Clock::now();
  result.weak_seconds = seconds_between(start, weak_end);

  // 2. the target, from the weak embedding. Its dimension d_W is the default rank of E_T = A B.
  {
    const SafetensorsFile f = load_safetensors(checkpoint);
    if (f.contains(kTokenEmbeddingWeight)) {
      result.transfer.source = kTokenEmbeddingWeight;
      result.transfer.vocab = f.at(kTokenEmbeddingWeight).size(0);
      result.transfer.weak_dim = f.at(kTokenEmbeddingWeight).size(-1);
    } else if (f.contains(kTokenEmbeddingA) && f.contains(kTokenEmbeddingB)) {
      result.transfer.source = fmt::format("{} * {}", kTokenEmbeddingA, kTokenEmbeddingB);
      result.transfer.vocab = f.at(kTokenEmbeddingA).size(0);
      result.transfer.weak_dim = f.at(kTokenEmbeddingB).size(-1);
    } else {
      throw Error(fmt::format("weak checkpoint {}: tensor '{}' is missing (the weak model's token embedding)",
                              checkpoint, kTokenEmbeddingWeight));
    }
  }
  TG_CHECK(!run.direct_copy || run.target.embedding_rank == 0,
           "--direct-copy loads the weak embedding as the whole token table: leave --embedding-rank at 0");
  if (run.target.embedding_rank == 0 && !run.direct_copy) run.target.embedding_rank = result.transfer.weak_dim;
  run.target.init_embedding_from = checkpoint;
  run.target.run_dir = run.run_dir + "/target";
  Trainer target(run.target);  // its constructor runs the embedding pass (apply_weight_loading)
  result.transfer.mode = run.target.embedding_rank > 0 ? "factorised" : "direct";
  result.transfer.target_dim =
      target.params().at(run.target.embedding_rank > 0 ? kTokenEmbeddingB : kTokenEmbeddingWeight).size(1);
  fmt::print("target: {} ({} layers, width {}), {} parameters, embedding {} from {} (d_W = {}, init scale {})\n",
             target.model().name(), run.target.layers, run.target.width, target.params().numel(), result.transfer.mode,
             checkpoint, result.transfer.weak_dim, run.target.transfer_init_scale);
  std::fflush(stdout);
  result.target = target.run();
  result.target_batches_per_epoch = batches_per_epoch(target);
  const auto end = Clock::now();
  result.target_seconds = seconds_between(weak_end, end);
  result.total_seconds = seconds_between(start, end);
  std::ofstream(run.run_dir + "/transfer.json") << result.to_json().dump(2) << "\n";
  return result;
}

// ---------------------------------------------------------------- the subcommand

namespace {

void print_result(const TransferRun& run, const TransferResult& r) {
  auto at = [](std::int64_t s, double per_epoch) {
    return s < 0 ? std::string("not reached") : fmt::format("step {} (epoch {:.1f})", s, static_cast<double>(s) / per_epoch);
  };
  fmt::print("\nGrokTransfer on {} mod {}\n", run.target.task, run.target.resolved_modulus());
  if (run.weak_checkpoint.empty()) {
    fmt::print("  weak model:   {} steps, test accuracy {:.2f}%, {:.1f} s\n", r.weak.step, 100 * r.weak.last_test_acc,
               r.weak_seconds);
  } else {
    fmt::print("  weak model:   from {} (not trained here)\n", run.weak_checkpoint);
  }
  fmt::print("  target:       {} steps, test accuracy {:.2f}% (train {:.2f}%), {:.1f} s\n", r.target.step,
             100 * r.target.last_test_acc, 100 * r.target.last_train_acc, r.target_seconds);
  fmt::print("  target train accuracy >= 95%: {}\n", at(r.target.first_train_95, r.target_batches_per_epoch));
  fmt::print("  target test accuracy  >= 95%: {}\n", at(r.target.first_test_95, r.target_batches_per_epoch));
  if (r.target.first_train_95 >= 0 && r.target.first_test_95 >= 0) {
    fmt::print("  Time Gap: {} steps ({:.1f} epochs)\n", r.target.first_test_95 - r.target.first_train_95,
               static_cast<double>(r.target.first_test_95 - r.target.first_train_95) / r.target_batches_per_epoch);
  } else {
    fmt::print("  Time Gap: n/a (a threshold was not reached)\n");
  }
  fmt::print("  total wall time (weak + target): {:.1f} s\n", r.total_seconds);
  fmt::print("  results in {}/ (transfer.json, weak/, target/)\n", run.run_dir);
}

struct TransferCli {
  TrainConfig shared, weak, target;
  TransferRun run;
};

}  // namespace

ExtraCommand register_transfer_command(CLI::App& app) {
  auto cli = std::make_shared<TransferCli>();
  TrainConfig& s = cli->shared;
  s.task = "a+b";
  s.modulus = 113;
  s.layout = "pair";
  s.train_fraction = 0.25;
  TrainConfig& w = cli->weak;
  w.model = "fnn";
  w.layers = 2;
  w.width = 16;
  w.embed_dim = 4;
  w.optimizer = "adamw";
  w.lr = 1e-2;
  w.weight_decay = 0.3;
  w.batch_size = 4096;
  w.max_steps = 10000;
  w.stop_at_test_acc = 0.3;
  w.warmup_steps = 0;
  TrainConfig& t = cli->target;
  t.model = "fnn";
  t.layers = 3;
  t.width = 512;
  t.embed_dim = 128;
  t.optimizer = "adamw";
  t.lr = 5e-3;
  t.weight_decay = 3.0;
  t.transfer_init_scale = 0.3;
  t.batch_size = 4096;
  t.max_steps = 3000;
  t.warmup_steps = 0;

  CLI::App* c = app.add_subcommand("transfer", "GrokTransfer: train a weak model, then the target from its embedding");
  auto opt = [&](const std::string& flag, auto& field, const std::string& help) {
    c->add_option(flag, field, help)->capture_default_str();
  };
  // shared
  opt("--task", s.task, "a+b | a-b | a*b | a*a-b");
  opt("--modulus", s.modulus, "modulus p (0: the task's default)");
  opt("--layout", s.layout, "pair (the two operands, as GrokTransfer) | sequence");
  opt("--train-fraction", s.train_fraction, "fraction of all examples used for training (both models)");
  opt("--seed", s.seed, "seed of the split, initialisations and batch orders (both models)");
  opt("--split-seed", s.split_seed, "seed of the split alone (-1: --seed; both models)");
  opt("--device", s.device, "auto | cpu | cuda | cuda:N");
  opt("--dtype", s.dtype, "f32 | f64 (CPU only)");
  opt("--run-dir", cli->run.run_dir, "weak run in RUN/weak, target in RUN/target, summary in RUN/transfer.json");
  c->add_flag_callback("--no-progress", [cli] { cli->shared.progress = false; }, "plain log lines");
  // weak model
  opt("--weak-model", w.model, "weak model: fnn | transformer");
  opt("--weak-layers", w.layers, "weak model: Linear layers (fnn, output layer included) or blocks");
  opt("--weak-width", w.width, "weak model: width");
  opt("--weak-heads", w.heads, "weak model: attention heads (transformer)");
  opt("--weak-embed-dim", w.embed_dim, "weak model: embedding dimension d_W (fnn)");
  c->add_flag("--weak-fnn-bias", w.fnn_bias, "weak model: biases in the hidden layers");
  opt("--weak-optimizer", w.optimizer, "weak model: adam | adamw | sgd");
  opt("--weak-lr", w.lr, "weak model: learning rate");
  opt("--weak-weight-decay", w.weight_decay, "weak model: weight decay");
  opt("--weak-batch-size", w.batch_size, "weak model: batch size (>= the training set: full-batch epochs)");
  opt("--weak-steps", w.max_steps, "weak model: step budget");
  opt("--weak-stop-at-test-acc", w.stop_at_test_acc, "weak model: stop once test accuracy reaches this");
  opt("--weak-eval-every", w.eval_every, "weak model: evaluate every N steps (0: every epoch)");
  opt("--weak-warmup", w.warmup_steps, "weak model: linear warm-up updates");
  opt("--weak-checkpoint", cli->run.weak_checkpoint, "skip the weak training: transfer from this checkpoint");
  // target
  opt("--model", t.model, "target: transformer | fnn");
  opt("--layers", t.layers, "target: Linear layers (fnn, output layer included) or Transformer blocks");
  opt("--width", t.width, "target: width");
  opt("--heads", t.heads, "target: attention heads");
  opt("--block", t.block, "target: reference | prenorm");
  opt("--embed-dim", t.embed_dim, "target: fnn embedding dimension d_T (0: the width)");
  c->add_flag("--fnn-bias", t.fnn_bias, "target: biases in the fnn's hidden layers");
  opt("--embedding-rank", t.embedding_rank, "target: rank of E_T = A B (0: d_W of the weak model)");
  c->add_flag("--direct-copy", cli->run.direct_copy, "target: plain embedding, copied from the weak one (d_T = d_W)");
  opt("--transfer-init-scale", t.transfer_init_scale, "target: std of B (0: PyTorch's nn.Linear default)");
  c->add_flag("--freeze-embedding-a", t.freeze_embedding_a, "target: keep A at the weak embedding");
  opt("--optimizer", t.optimizer, "target: adam | adamw | sgd");
  opt("--lr", t.lr, "target: learning rate");
  opt("--weight-decay", t.weight_decay, "target: weight decay");
  opt("--beta1", t.beta1, "target: Adam beta1");
  opt("--beta2", t.beta2, "target: Adam beta2");
  opt("--batch-size", t.batch_size, "target: batch size (>= the training set: full-batch epochs)");
  opt("--steps", t.max_steps, "target: step budget");
  opt("--stop-at-test-acc", t.stop_at_test_acc, "target: stop once test accuracy reaches this (0: never)");
  opt("--eval-every", t.eval_every, "target: evaluate every N steps (0: every epoch)");
  opt("--warmup", t.warmup_steps, "target: linear warm-up updates");
  opt("--clip-grad-norm", t.clip_grad_norm, "target: clip the global gradient norm (0: off)");
  // target's gradient method: GrokTransfer's initialisation combined with NeuralGrok or Grokfast
  opt("--method", t.method, "target: standard | grokfast-ema | grokfast-ma | neuralgrok");
  opt("--meta-grad", t.meta_grad, "target, NeuralGrok: lookahead | unrolled");
  opt("--meta-every", t.meta_every, "target, NeuralGrok: inner steps per amplifier update (T)");
  opt("--amp-hidden", t.amp_hidden, "target, NeuralGrok: amplifier hidden sizes");
  opt("--amp-c", t.amp_c, "target, NeuralGrok: g' = c (p g) / ||p g|| per tensor");
  opt("--amp-lr", t.amp_lr, "target, NeuralGrok: amplifier learning rate");
  opt("--outer-fraction", s.outer_fraction,
      "held-out outer fraction of all examples, carved from the train part (both models; 0.01 when the "
      "target uses neuralgrok and this is 0)");

  ExtraCommand command;
  command.command = c;
  command.run = [cli] {
    TransferRun run = cli->run;
    run.weak = cli->weak;
    run.target = cli->target;
    for (TrainConfig* m : {&run.weak, &run.target}) {
      m->task = cli->shared.task;
      m->modulus = cli->shared.modulus;
      m->layout = cli->shared.layout;
      m->train_fraction = cli->shared.train_fraction;
      m->seed = cli->shared.seed;
      m->split_seed = cli->shared.split_seed;
      m->outer_fraction = cli->shared.outer_fraction;
      if (m->outer_fraction == 0.0 && run.target.method == "neuralgrok") m->outer_fraction = 0.01;
      m->device = cli->shared.device;
      m->dtype = cli->shared.dtype;
      m->progress = cli->shared.progress;
    }
    const TransferResult r = run_transfer(run);
    print_result(run, r);
  };
  return command;
}

}  // namespace tg
