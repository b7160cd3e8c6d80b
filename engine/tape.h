// The autograd tape.
//
// Every differentiable op, when grad mode is on and one of its inputs requires a gradient, appends a
// Node to the tape: its name, the tape slots ("vars") of its inputs and outputs, and a backward rule.
// Backward walks the tape from the last node to the first, so recording order is the topological
// order and no graph search is needed.
//
// The op contract (docs/architecture.md):
//   forward   validates, allocates, runs backend_for(device).kernel(...), records a Node.
//   backward  maps the gradients of the outputs to gradients of the inputs, written with the same
//             public ops (engine/ops.h). With create_graph the rule therefore records its own nodes,
//             and the gradient is itself differentiable: this is how second order works
//             (reverse-over-reverse: the recorded backward is replayed backward again).
//   fused ops whose backward is a fused kernel expose that kernel as an op too (softmax_backward,
//             causal_self_attention_backward, layernorm_backward, ...); that op's own backward is the
//             op's second-order rule, or a loud error naming it.
//
// Tapes and truncation: the tape is cleared once per training step (clear()). Tensors recorded before
// a clear become constants for later recordings; only leaf parameters carry over.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "engine/tensor.h"

namespace tg {

using TensorList = std::vector<Tensor>;

struct AutogradMeta {
  bool is_leaf = true;         // set by the user (parameters); false for op outputs
  bool requires_grad = false;  // leaves only: gradients flow into .grad
  Tensor grad;                 // leaves only
  std::int64_t var = -1;       // slot on the tape, valid while generation matches the tape's
  std::uint64_t generation = 0;
};

// A backward rule: gradients of the outputs (one per output, never undefined) -> gradients of the
// inputs (one per input; an entry may be left undefined where needs_input_grad is false).
using BackwardFn = std::function<TensorList(const TensorList& grad_outputs,
                                            const std::vector<bool>& needs_input_grad)>;

struct Node {
  const char* op = "";                      // e.g. "matmul"; used in every error about this node
  std::vector<std::int64_t> input_vars;     // -1 where the input needs no gradient
  std::vector<std::int64_t> output_vars;
  BackwardFn backward;                      // empty once released
  // In-place writes to an input after recording would make backward silently wrong: remember each
  // input's storage version and refuse to run if one changed.
  std::vector<std::pair<std::shared_ptr<Storage>, std::uint64_t>> input_versions;
};

struct BackwardOptions {
  bool create_graph = false;  // record the backward pass itself (for second-order derivatives)
  bool retain_graph = false;  // keep the nodes after use (implied by create_graph)
};

class Tape {
 public:
  // Records outputs = op(inputs) if grad mode is on and some input requires grad; sets the outputs'
  // autograd state. Returns false (and records nothing) otherwise.
  bool record(const char* op, const TensorList& inputs, TensorList& outputs, BackwardFn backward);

  // d(sum_i <roots[i], root_grads[i]>) / d(inputs). root_grads may be empty when every root is a
  // one-element tensor (seeded with 1). Inputs not reached by the roots get zero gradients.
  TensorList grad(const TensorList& roots, const TensorList& inputs, const TensorList& root_grads = {},
                  BackwardOptions options = {});

  // Accumulates d(root)/d(leaf) into .grad of every leaf parameter the root depends on.
  void backward(const Tensor& root, const Tensor& root_grad = Tensor(), BackwardOptions options = {});

  void clear();  // drops every node; tensors recorded so far become constants
  std::size_t num_nodes() const { return nodes_.size(); }
  std::uint64_t generation() const { return generation_; }
  bool tracks(const Tensor& t) const;

 private:
  struct Var {
    Shape shape;
    DType dtype;
    Device device;
    std::shared_ptr<AutogradMeta> leaf;  // set for leaf parameters
  };
  std::int64_t var_of(const Tensor& t);  // registers a leaf on first use
  TensorList run_backward(const TensorList& roots, const TensorList& root_grads,
                          const std::vector<std::int64_t>& target_vars, BackwardOptions options);

  std::vector<std::unique_ptr<Node>> nodes_;  // unique_ptr: nodes appended during backward must not move others
  std::vector<Var> vars_;
  std::uint64_t generation_ = 1;
};

// The tape ops record on (one per process; the engine is single-threaded).
Tape& tape();
bool tape_tracks(const Tensor& t);

// Convenience wrappers over tape().
void backward(const Tensor& root, const Tensor& root_grad = Tensor(), BackwardOptions options = {});
TensorList grad(const TensorList& roots, const TensorList& inputs, const TensorList& root_grads = {},
                BackwardOptions options = {});

// Grad mode: ops record only while it is on (the default).
bool grad_mode_enabled();
class GradModeGuard {
 public:
  explicit GradModeGuard(bool enabled);
  ~GradModeGuard();
  GradModeGuard(const GradModeGuard&) = delete;
  GradModeGuard& operator=(const GradModeGuard&) = delete;

 private:
  bool previous_;
};
struct NoGradGuard : GradModeGuard {
  NoGradGuard() : GradModeGuard(false) {}
};

// A backward rule for ops whose derivative tapegrok does not provide: it throws an error naming the op.
BackwardFn no_backward_rule(const char* op);

}  // namespace tg
