#include "experiments/cli.h"

#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <functional>
#include <iostream>

#include "engine/error.h"
#include "experiments/commands.h"
#include "experiments/dump_state.h"
#include "experiments/trainer.h"

namespace tg {

namespace {

// Registers TrainConfig fields as CLI options and remembers, per option, how to copy the field, so a
// resumed run can take exactly the options given on its command line over the checkpoint's config.
class ConfigOptions {
 public:
  ConfigOptions(CLI::App* app, TrainConfig& config) : app_(app), config_(config) {}

  template <class T>
  CLI::Option* add(const std::string& flag, T TrainConfig::*field, const std::string& help) {
    CLI::Option* opt = nullptr;
    if constexpr (std::is_same_v<T, bool>) {
      opt = app_->add_flag(flag, config_.*field, help);  // a switch: present means true
    } else {
      opt = app_->add_option(flag, config_.*field, help)->capture_default_str();
    }
    copiers_.emplace_back(opt, [field](TrainConfig& dst, const TrainConfig& src) { dst.*field = src.*field; });
    return opt;
  }

  // `base` with every option that was given explicitly taken from the parsed config.
  TrainConfig given_over(TrainConfig base) const {
    for (const auto& [opt, copy] : copiers_) {
      if (opt->count() > 0) copy(base, config_);
    }
    return base;
  }

 private:
  CLI::App* app_;
  TrainConfig& config_;
  std::vector<std::pair<CLI::Option*, std::function<void(TrainConfig&, const TrainConfig&)>>> copiers_;
};

void add_task_and_model_options(ConfigOptions& o) {
  o.add("--task", &TrainConfig::task, "a+b | a-b | a*b | a*a-b | a*c+b*d-e");
  o.add("--modulus", &TrainConfig::modulus, "modulus p (0: the task's default, 97 or 7)");
  o.add("--layout", &TrainConfig::layout, "sequence (operands, operators, =) | pair (the two operands only)");
  o.add("--train-fraction", &TrainConfig::train_fraction, "fraction of all examples used for training");
  o.add("--outer-fraction", &TrainConfig::outer_fraction,
        "fraction of all examples held out of the training part (NeuralGrok's outer set)");
  o.add("--seed", &TrainConfig::seed, "seed of the split, the initialisation and the batch order");
  o.add("--layers", &TrainConfig::layers, "Transformer layers");
  o.add("--width", &TrainConfig::width, "model width d");
  o.add("--heads", &TrainConfig::heads, "attention heads");
  o.add("--block", &TrainConfig::block, "reference (as the published code) | prenorm");
  o.add("--model", &TrainConfig::model, "transformer | fnn (embeddings of the operands, concatenated, then an MLP)");
  o.add("--embed-dim", &TrainConfig::embed_dim, "fnn: token embedding size (0: the width)");
  o.add("--fnn-bias", &TrainConfig::fnn_bias, "fnn: biases in the hidden layers");
  o.add("--embedding-rank", &TrainConfig::embedding_rank,
        "factorised token embedding A [V, r] B [r, d] with this r (0: a plain embedding)");
  o.add("--device", &TrainConfig::device, "auto | cpu | cuda | cuda:N");
  o.add("--dtype", &TrainConfig::dtype, "f32 | f64 (CPU only)");
}

void add_training_options(ConfigOptions& o, TrainConfig& c, CLI::App* app) {
  o.add("--optimizer", &TrainConfig::optimizer, "adam (L2 decay added to the gradient) | adamw | sgd");
  o.add("--lr", &TrainConfig::lr, "peak learning rate");
  o.add("--beta1", &TrainConfig::beta1, "Adam beta1");
  o.add("--beta2", &TrainConfig::beta2, "Adam beta2");
  o.add("--eps", &TrainConfig::eps, "Adam epsilon");
  o.add("--weight-decay", &TrainConfig::weight_decay, "weight decay");
  o.add("--momentum", &TrainConfig::momentum, "SGD momentum");
  o.add("--warmup", &TrainConfig::warmup_steps, "linear warm-up updates (the first update has lr 0)");
  o.add("--batch-size", &TrainConfig::batch_size, "examples per step");
  o.add("--steps", &TrainConfig::max_steps, "optimizer updates in total");
  o.add("--clip-grad-norm", &TrainConfig::clip_grad_norm, "clip the global gradient norm to this (0: off)");
  o.add("--grad-normalize", &TrainConfig::grad_normalize, "per-tensor g' = c g / ||g|| with this c (0: off)");
  o.add("--eval-every", &TrainConfig::eval_every, "evaluate every N steps (0: every epoch)");
  o.add("--stop-at-test-acc", &TrainConfig::stop_at_test_acc, "end once test accuracy reaches this (0: never)");
  o.add("--checkpoint-every", &TrainConfig::checkpoint_every, "also checkpoint every N steps (0: only at the end)");
  o.add("--run-dir", &TrainConfig::run_dir, "where config.json, metrics.jsonl, checkpoint and summary go");
  o.add("--init-embedding-from", &TrainConfig::init_embedding_from,
        "GrokTransfer: initialise the embedding from this weak model's checkpoint");
  o.add("--transfer-init-scale", &TrainConfig::transfer_init_scale,
        "GrokTransfer: std of the random factor B (0: PyTorch's default)");
  o.add("--freeze-embedding-a", &TrainConfig::freeze_embedding_a, "GrokTransfer: keep A at the weak embedding");
  o.add("--method", &TrainConfig::method, "standard | grokfast-ema | grokfast-ma | neuralgrok");
  o.add("--grokfast-alpha", &TrainConfig::grokfast_alpha, "Grokfast EMA decay");
  o.add("--grokfast-lambda", &TrainConfig::grokfast_lambda, "Grokfast amplification (0: EMA 2, MA 5)");
  o.add("--grokfast-window", &TrainConfig::grokfast_window, "Grokfast MA window");
  o.add("--amp-hidden", &TrainConfig::amp_hidden, "NeuralGrok amplifier hidden sizes, e.g. 128,128 or 32,32");
  o.add("--amp-c", &TrainConfig::amp_c, "NeuralGrok: g' = c (p g) / ||p g|| per tensor");
  o.add("--amp-lr", &TrainConfig::amp_lr, "NeuralGrok: amplifier Adam learning rate");
  o.add("--amp-weight-decay", &TrainConfig::amp_weight_decay, "NeuralGrok: amplifier weight decay");
  o.add("--meta-every", &TrainConfig::meta_every, "NeuralGrok: inner steps per amplifier update (T)");
  o.add("--meta-grad", &TrainConfig::meta_grad, "NeuralGrok: lookahead (official code) | unrolled (exact)");
  o.add("--amp-from", &TrainConfig::amp_from, "NeuralGrok: start from this amplifier (safetensors)");
  o.add("--amp-frozen", &TrainConfig::amp_frozen, "NeuralGrok: never update the amplifier");
  app->add_flag_callback("--no-progress", [&c] { c.progress = false; },
                         "plain log lines instead of a live progress line");
}

void print_summary(const Trainer& t) {
  const RunProgress& p = t.progress();
  auto at = [](std::int64_t s) { return s < 0 ? std::string("not reached") : fmt::format("step {}", s); };
  fmt::print("\n{} mod {} on {}: {} steps in {:.1f} s ({:.1f} steps/s)\n", t.config().task, t.dataset().modulus,
             t.device().str(), p.step, p.wall_seconds, p.wall_seconds > 0 ? p.step / p.wall_seconds : 0.0);
  fmt::print("  final accuracy: train {:.2f}%, test {:.2f}% (test loss {:.4f})\n", 100 * p.last_train_acc,
             100 * p.last_test_acc, p.last_test_loss);
  fmt::print("  test accuracy >= 95%: {}; >= 99%: {}; train accuracy >= 95%: {}\n", at(p.first_test_95),
             at(p.first_test_99), at(p.first_train_95));
  fmt::print("  results in {}/ (config.json, metrics.jsonl, checkpoint.safetensors, summary.json)\n",
             t.config().run_dir);
}

}  // namespace

int run_cli(int argc, char** argv) {
  CLI::App app{"tapegrok: grokking experiments on a from-scratch autograd engine"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "help for every subcommand");

  // ---- train
  TrainConfig train_config;
  std::string resume;
  CLI::App* train = app.add_subcommand("train", "train a Transformer on a modular-arithmetic task");
  train->set_config("--config", "", "read settings from a TOML/INI file (keys are the long flag names)");
  ConfigOptions train_options(train, train_config);
  add_task_and_model_options(train_options);
  add_training_options(train_options, train_config, train);
  train->add_option("--resume", resume,
                    "continue the run saved in this checkpoint (its settings, overridden by flags given here)");

  // ---- eval
  std::string eval_checkpoint, eval_device = "auto";
  CLI::App* eval = app.add_subcommand("eval", "evaluate a run checkpoint on its train, outer and test sets");
  eval->add_option("--checkpoint", eval_checkpoint, "a run's checkpoint.safetensors")->required();
  eval->add_option("--device", eval_device, "auto | cpu | cuda | cuda:N")->capture_default_str();

  // ---- dump-state
  TrainConfig dump_config;
  std::int64_t dump_batch = 16, dump_adam_steps = 0;
  std::string dump_out;
  bool dump_hvp = false;
  CLI::App* dump = app.add_subcommand("dump-state", "write one batch's parameters, logits, loss and gradients");
  ConfigOptions dump_options(dump, dump_config);
  add_task_and_model_options(dump_options);
  dump->add_option("--batch", dump_batch, "examples in the batch (the first of the training split)")->capture_default_str();
  dump->add_option("--adam-steps", dump_adam_steps, "also record the losses of K Adam steps on the batch")
      ->capture_default_str();
  dump->add_flag("--hvp", dump_hvp, "also store a Hessian-vector product of the loss (hvp.<name>)");
  dump->add_option("--out", dump_out, "output safetensors file")->required();

  const std::vector<ExtraCommand> extra_commands = register_extra_commands(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  try {
    if (*train) {
      TrainConfig config = train_config;
      if (!resume.empty()) config = train_options.given_over(config_from_checkpoint(resume));
      Trainer trainer(config);
      if (!resume.empty()) {
        trainer.load_checkpoint(resume);
        fmt::print("resumed {} at step {}\n", resume, trainer.progress().step);
      }
      fmt::print("training {} mod {} ({} train / {} test examples) on {}, {} parameters\n", config.task,
                 trainer.dataset().modulus, trainer.split().train.size(), trainer.split().test.size(),
                 trainer.device().str(), trainer.params().numel());
      trainer.run();
      print_summary(trainer);
    } else if (*eval) {
      TrainConfig config = config_from_checkpoint(eval_checkpoint);
      config.device = eval_device;
      Trainer trainer(config);
      trainer.load_checkpoint(eval_checkpoint);
      nlohmann::json result = {{"checkpoint", eval_checkpoint}, {"step", trainer.progress().step}};
      auto record = [&](const char* name, const std::vector<std::int64_t>& examples) {
        if (examples.empty()) return;
        const EvalStats e = trainer.evaluate(examples);
        result[name] = {{"loss", e.loss}, {"accuracy", e.accuracy}, {"examples", e.examples}};
      };
      record("train", trainer.split().train);
      record("outer", trainer.split().outer);
      record("test", trainer.split().test);
      std::cout << result.dump(2) << std::endl;
    } else if (*dump) {
      dump_state(dump_config, dump_batch, dump_adam_steps, dump_hvp, dump_out);
      fmt::print("wrote {}\n", dump_out);
    } else {
      for (const ExtraCommand& c : extra_commands) {
        if (*c.command) c.run();
      }
    }
  } catch (const std::exception& e) {
    std::fflush(stdout);
    fmt::print(stderr, "\ntapegrok: error: {}\n", e.what());
    return 1;
  }
  return 0;
}

}  // namespace tg
