// The interface every model of tapegrok implements: a list of named parameters (PyTorch state-dict
// names), their initialisation, and a functional forward pass from token ids to answer logits.
// Functional (parameters passed in) so the same forward runs on the table's leaves during training
// and on recorded tensors when differentiating through training steps.
#pragma once

#include <vector>

#include "engine/parameters.h"
#include "engine/random.h"

namespace tg {

class Model {
 public:
  virtual ~Model() = default;
  virtual const char* name() const = 0;
  virtual std::vector<ParameterSpec> parameter_specs() const = 0;
  virtual void initialize(const ParameterTable& params, Rng& rng) const = 0;
  // ids: i32 [B, S] -> logits [B, V] for the answer; params in parameter_specs() order.
  virtual Tensor forward(const TensorList& params, const Tensor& ids) const = 0;
};

}  // namespace tg
