#include "experiments/cli/cli_options.h"

#include "experiments/methods/method_factory.h"

namespace tg {

void add_task_and_model_options(ConfigOptions& o) {
  o.add("--task", &TrainConfig::task, "a+b | a-b | a*b | a*a-b | a*c+b*d-e");
  o.add("--modulus", &TrainConfig::modulus, "modulus p (0: the task's default, 97 or 7)");
  o.add("--layout", &TrainConfig::layout, "sequence (operands, operators, =) | interleaved (operators between operands) | pair (the two operands only)");
  o.add("--train-fraction", &TrainConfig::train_fraction, "fraction of all examples used for training");
  o.add("--outer-fraction", &TrainConfig::outer_fraction,
        "fraction of all examples held out of the training part (NeuralGrok's outer set)");
  o.add("--seed", &TrainConfig::seed, "seed of the split, the initialisation and the batch order");
  o.add("--split-seed", &TrainConfig::split_seed,
        "seed of the train/test split alone (-1: --seed), to vary split and initialisation apart");
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
  o.add("--cuda-graph", &TrainConfig::cuda_graph,
        "sync-free steps: statistics stay on the device until logged; on a GPU each step replays one captured "
        "CUDA graph (same results); --cuda-graph=false turns it off, e.g. when resuming a run that had it");
  o.add("--eval-every", &TrainConfig::eval_every, "evaluate every N steps (0: every epoch)");
  o.add("--stop-at-test-acc", &TrainConfig::stop_at_test_acc, "end once test accuracy reaches this (0: never)");
  o.add("--checkpoint-every", &TrainConfig::checkpoint_every, "also checkpoint every N steps (0: only at the end)");
  o.add("--keep-checkpoints", &TrainConfig::keep_checkpoints,
        "keep every checkpoint as checkpoint_step<N>.safetensors too (for analysis over training)");
  o.add("--run-dir", &TrainConfig::run_dir, "where config.json, metrics.jsonl, checkpoint and summary go");
  o.add("--init-embedding-from", &TrainConfig::init_embedding_from,
        "GrokTransfer: initialise the embedding from this weak model's checkpoint");
  o.add("--transfer-init-scale", &TrainConfig::transfer_init_scale,
        "GrokTransfer: std of the random factor B (0: PyTorch's default)");
  o.add("--freeze-embedding-a", &TrainConfig::freeze_embedding_a, "GrokTransfer: keep A at the weak embedding");
  o.add("--loss", &TrainConfig::loss, "cross-entropy | stablemax (StableMax cross-entropy)");
  o.add("--method", &TrainConfig::method, gradient_method_names());
  o.add("--grokfast-alpha", &TrainConfig::grokfast_alpha, "Grokfast EMA decay");
  o.add("--grokfast-lambda", &TrainConfig::grokfast_lambda, "Grokfast amplification (0: EMA 2, MA 5)");
  o.add("--grokfast-window", &TrainConfig::grokfast_window, "Grokfast MA window");
  add_amplifier_options(o);
  o.add("--amp-lr", &TrainConfig::amp_lr, "NeuralGrok: amplifier Adam learning rate");
  o.add("--amp-weight-decay", &TrainConfig::amp_weight_decay, "NeuralGrok: amplifier weight decay");
  o.add("--meta-every", &TrainConfig::meta_every, "NeuralGrok: inner steps per amplifier update (T)");
  o.add("--meta-grad", &TrainConfig::meta_grad, "NeuralGrok: lookahead (official code) | unrolled (exact)");
  o.add("--amp-from", &TrainConfig::amp_from, "NeuralGrok: start from this amplifier (safetensors)");
  o.add("--amp-frozen", &TrainConfig::amp_frozen, "NeuralGrok: never update the amplifier");
  app->add_flag_callback("--no-progress", [&c] { c.progress = false; },
                         "plain log lines instead of a live progress line");
}

void add_amplifier_options(ConfigOptions& o) {
  o.add("--amp-hidden", &TrainConfig::amp_hidden, "NeuralGrok amplifier hidden sizes, e.g. 128,128 or 32,32");
  o.add("--amp-c", &TrainConfig::amp_c, "NeuralGrok: g' = c (p g) / ||p g|| per tensor");
}

}  // namespace tg
