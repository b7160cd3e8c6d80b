// Builds the model a run's config names, and applies initialisation that comes from outside the
// model itself (weights loaded from files: GrokTransfer's embedding pass).
#pragma once

#include <memory>

#include "engine/parameters.h"
#include "engine/random.h"
#include "experiments/train_config.h"
#include "models/model.h"

namespace tg {

std::unique_ptr<Model> make_model(const TrainConfig& config, std::int64_t vocab, std::int64_t seq_len);

// Runs after model.initialize(): loads what the config asks for into `params` (nothing by default).
void apply_weight_loading(const TrainConfig& config, const Model& model, const ParameterTable& params, Rng& rng);

}  // namespace tg
