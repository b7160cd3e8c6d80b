#include "experiments/training/embedding_transfer.h"

#include <fmt/format.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "engine/error.h"
#include "engine/ops.h"
#include "engine/safetensors.h"
#include "experiments/training/tasks.h"
#include "experiments/training/weight_loading.h"
#include "models/token_embedding.h"

namespace tg {

// ---------------------------------------------------------------- the embedding pass

// The largest embedding a run accepts: every modulus up to 4096 plus operators, and --width's limit.
constexpr std::int64_t kMaxVocab = 8192;
constexpr std::int64_t kMaxEmbeddingDim = 65536;

namespace {

// The weak model's run config from a tapegrok checkpoint's metadata, checked against the target's split.
void check_same_split(const SafetensorsFile& file, const TrainConfig& target) {
  const auto it = file.metadata.find("config");
  if (it == file.metadata.end()) return;  // not a tapegrok run checkpoint (e.g. PyTorch weights): nothing to compare
  nlohmann::json weak;
  try {
    weak = nlohmann::json::parse(it->second);
  } catch (const nlohmann::json::exception&) {
    return;  // not ours either
  }
  try {
    const std::string task = weak.value("task", std::string());
    const std::int64_t modulus = weak.value("modulus", std::int64_t{0});
    const std::string layout = weak.value("layout", std::string("sequence"));
    if (task != target.task || layout != target.layout) return;  // another task: no shared examples to leak
    if ((modulus > 0 ? modulus : default_modulus(task)) != target.resolved_modulus()) return;
    const std::uint64_t seed =
        split_seed_of(weak.value("seed", std::uint64_t{0}), weak.value("split_seed", std::int64_t{-1}));
    const double train_fraction = weak.value("train_fraction", 0.0);
    const double outer_fraction = weak.value("outer_fraction", 0.0);
    // The test part depends only on the split seed and the train fraction (split_dataset carves the outer
    // part from the train part), so a different outer fraction leaks nothing into the test set.
    TG_CHECK(seed == target.resolved_split_seed() && train_fraction == target.train_fraction,
             "--init-embedding-from {}: the weak model was trained on {} mod {} with another split (split seed {}, "
             "train fraction {}, outer fraction {}; this run: split seed {}, {}, {}), so it has seen this run's test "
             "examples; train the weak model with the same split seed and --train-fraction",
             file.path, task, target.resolved_modulus(), seed, train_fraction, outer_fraction,
             target.resolved_split_seed(), target.train_fraction, target.outer_fraction);
  } catch (const nlohmann::json::exception&) {
    return;  // a config we cannot read: no check
  }
}

}  // namespace

TransferInfo transfer_embedding(const std::string& path, const ParameterTable& params, Rng& rng,
                                const TransferOptions& options) {
  TG_CHECK(options.init_scale >= 0, "--transfer-init-scale must be >= 0, got {}", options.init_scale);
  const SafetensorsFile file = load_safetensors(path);
  const std::string where = fmt::format("--init-embedding-from {}", path);

  // E_W: the weak model's token table.
  TransferInfo info;
  Tensor weak;
  auto check_2d = [&](const std::string& name) {
    const Tensor& t = file.at(name);
    TG_CHECK(t.dim() == 2, "{}: tensor '{}' must be a 2-D embedding table [vocab, dim], got {}", where, name, t.str());
    TG_CHECK(t.dtype() == params.dtype(), "{}: tensor '{}' has dtype {} but this run's parameters are {}", where, name,
             dtype_name(t.dtype()), dtype_name(params.dtype()));
    return t;
  };
  if (file.contains(kTokenEmbeddingWeight)) {
    weak = check_2d(kTokenEmbeddingWeight);
    info.source = kTokenEmbeddingWeight;
  } else if (file.contains(kTokenEmbeddingA) && file.contains(kTokenEmbeddingB)) {
    const Tensor a = check_2d(kTokenEmbeddingA), b = check_2d(kTokenEmbeddingB);
    TG_CHECK(a.size(1) == b.size(0), "{}: factors '{}' {} and '{}' {} do not multiply", where, kTokenEmbeddingA,
             a.str(), kTokenEmbeddingB, b.str());
    // Their product is allocated: bound it like the model sizes a run accepts (a file of a few bytes
    // can hold empty factors [V, 0] x [0, 1e8] whose product would take gigabytes).
    TG_CHECK(a.size(0) <= kMaxVocab && b.size(1) <= kMaxEmbeddingDim,
             "{}: factors '{}' {} and '{}' {} make an embedding larger than [{}, {}]", where, kTokenEmbeddingA, a.str(),
             kTokenEmbeddingB, b.str(), kMaxVocab, kMaxEmbeddingDim);
    NoGradGuard no_grad;
    weak = matmul(a, b);
    info.source = fmt::format("{} * {}", kTokenEmbeddingA, kTokenEmbeddingB);
  } else {
    throw Error(fmt::format("{}: tensor '{}' is missing (the weak model's token embedding; the file holds {} tensors{})",
                            where, kTokenEmbeddingWeight, file.names.size(),
                            file.names.empty() ? "" : fmt::format(", e.g. '{}'", file.names.front())));
  }
  info.vocab = weak.size(0);
  info.weak_dim = weak.size(1);

  const bool factorised = params.contains(kTokenEmbeddingA);
  TG_CHECK(factorised || params.contains(kTokenEmbeddingWeight),
           "{}: this model has neither '{}' nor '{}' to initialise", where, kTokenEmbeddingWeight, kTokenEmbeddingA);
  const Tensor& target = params.at(factorised ? kTokenEmbeddingA : kTokenEmbeddingWeight);
  TG_CHECK(target.size(0) == info.vocab,
           "{}: tensor '{}' has a vocabulary of {} tokens ({}) but this run's task has {} (another task, modulus or "
           "layout?)", where, info.source, info.vocab, weak.str(), target.size(0));
  if (options.expected_config != nullptr) check_same_split(file, *options.expected_config);

  WeightPlan plan;
  SafetensorsFile source;
  source.path = path;
  source.tensors[kTokenEmbeddingWeight] = weak;
  Tensor b_init;
  if (factorised) {
    const Tensor& b = params.at(kTokenEmbeddingB);
    info.mode = "factorised";
    info.target_dim = b.size(1);
    TG_CHECK(target.size(1) == info.weak_dim,
             "{}: the weak embedding '{}' has dimension d_W = {} but this model's factor '{}' has rank {}: set "
             "--embedding-rank {}", where, info.source, info.weak_dim, kTokenEmbeddingA, target.size(1), info.weak_dim);
    plan[kTokenEmbeddingA] = kTokenEmbeddingWeight;
    b_init = options.init_scale > 0
                 ? normal_tensor(rng, b.shape(), 0.0, options.init_scale, b.dtype())
                 : uniform_tensor(rng, b.shape(), -factor_b_default_bound(b.size(0)), factor_b_default_bound(b.size(0)),
                                  b.dtype());
  } else {
    info.mode = "direct";
    info.target_dim = target.size(1);
    TG_CHECK(target.size(1) == info.weak_dim,
             "{}: the weak embedding '{}' has dimension d_W = {} but this model's '{}' has {}: a direct copy needs "
             "equal dimensions; use the factorised embedding (--embedding-rank {})", where, info.source, info.weak_dim,
             kTokenEmbeddingWeight, target.size(1), info.weak_dim);
    plan[kTokenEmbeddingWeight] = kTokenEmbeddingWeight;
  }
  // All checks passed: apply.
  load_weights(source, params, plan);
  if (b_init.defined()) {
    Tensor b = params.at(kTokenEmbeddingB);
    b.copy_from_(b_init);
  }
  return info;
}

}  // namespace tg
