// The one place that turns a run's settings into its gradient methods. Adding a method: its file
// defines `std::unique_ptr<GradientMethod> make_<name>(const MethodSetup&)`, and method_factory.cpp
// gets one line in its table (docs/architecture.md, "Adding a method").
#pragma once

#include <string>

#include "engine/random.h"
#include "experiments/methods/gradient_method.h"
#include "experiments/training/tasks.h"
#include "experiments/training/train_config.h"

namespace tg {

// What a method may need when it is made.
struct MethodSetup {
  const TrainConfig& config;
  const ParameterTable& params;  // the model's, on the run's device
  const Dataset& data;
  const Split& split;
  Rng& rng;                      // the run's stream for a method's own parameters (NeuralGrok's amplifier)
};

// The methods the config asks for, in the order a step applies them: --method's (none for
// standard), then per-tensor normalisation when --grad-normalize > 0. Unknown names are an error.
MethodList make_gradient_methods(const MethodSetup& setup);

// The names --method takes, "standard | grokfast-ema | ...", for help texts.
std::string gradient_method_names();

}  // namespace tg
