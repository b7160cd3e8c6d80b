// `tapegrok dump-state`: one batch's complete forward/backward state in a safetensors file, for
// verification against other frameworks (test/pytorch/check_parity.py reads it).
#pragma once

#include <string>

#include "experiments/training/train_config.h"

namespace tg {

// Writes: every parameter under its PyTorch name; inputs (i32 [N, S]) and targets (i32 [N]) of one
// batch; logits (f32 [N, V]) at the answer position; loss (f32 [1]); grad.<name> for every parameter
// (gradient of the mean cross-entropy); and, when adam_steps > 0, adam_loss (f32 [K]): the losses of
// K successive Adam steps on that batch (lr 1e-3, betas 0.9/0.98, eps 1e-8, no weight decay or
// warm-up), each loss measured before its step; when hvp is set, hvp.v.<name> (a random direction)
// and hvp.<name>: the Hessian-vector product H v of the mean loss (second-order autograd).
void dump_state(const TrainConfig& config, std::int64_t batch, std::int64_t adam_steps, bool hvp,
                const std::string& out);

}  // namespace tg
