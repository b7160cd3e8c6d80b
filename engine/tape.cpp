#include "engine/tape.h"

#include <fmt/format.h>

#include "engine/backend.h"
#include "engine/error.h"
#include "engine/ops.h"

namespace tg {

namespace {
bool g_grad_mode = true;
}

bool grad_mode_enabled() { return g_grad_mode; }
GradModeGuard::GradModeGuard(bool enabled) : previous_(g_grad_mode) { g_grad_mode = enabled; }
GradModeGuard::~GradModeGuard() { g_grad_mode = previous_; }

Tape& tape() {
  static Tape* t = new Tape();  // never destroyed: tensors in static objects may outlive main()
  return *t;
}
bool tape_tracks(const Tensor& t) { return tape().tracks(t); }

void backward(const Tensor& root, const Tensor& root_grad, BackwardOptions options) {
  tape().backward(root, root_grad, options);
}
TensorList grad(const TensorList& roots, const TensorList& inputs, const TensorList& root_grads,
                BackwardOptions options) {
  return tape().grad(roots, inputs, root_grads, options);
}

BackwardFn no_backward_rule(const char* op) {
  return [op](const TensorList&, const std::vector<bool>&) -> TensorList {
    throw Error(fmt::format("op '{}' has no backward rule: tapegrok cannot differentiate through it "
                            "(this is a derivative order the engine does not provide)",
                            op));
  };
}

// ---------------------------------------------------------------- recording

bool Tape::tracks(const Tensor& t) const {
  const auto& m = t.autograd_meta();
  if (!m) return false;
  if (m->is_leaf) return m->requires_grad;
  return m->generation == generation_ && m->var >= 0;
}

std::int64_t Tape::var_of(const Tensor& t) {
  const auto& m = t.autograd_meta();
  if (!tracks(t)) return -1;
  if (m->generation == generation_ && m->var >= 0) return m->var;
  // A leaf used for the first time since the last clear: give it a slot.
  m->var = static_cast<std::int64_t>(vars_.size());
  m->generation = generation_;
  vars_.push_back(Var{t.shape(), t.dtype(), t.device(), m});
  return m->var;
}

bool Tape::record(const char* op, const TensorList& inputs, TensorList& outputs, BackwardFn backward) {
  if (!grad_mode_enabled()) return false;
  bool any = false;
  for (const Tensor& x : inputs) any = any || (x.defined() && tracks(x));
  if (!any) return false;

  auto node = std::make_unique<Node>();
  node->op = op;
  node->backward = std::move(backward);
  for (const Tensor& x : inputs) {
    node->input_vars.push_back(x.defined() ? var_of(x) : -1);
    if (x.defined()) node->input_versions.emplace_back(x.storage(), x.storage()->version());
  }
  for (Tensor& y : outputs) {
    // Update the output's meta in place when it has one: a backward rule may have captured a copy
    // of this handle (e.g. exp's rule uses its output), and that copy must see it is on the tape.
    std::shared_ptr<AutogradMeta> meta = y.autograd_meta();
    if (!meta) {
      meta = std::make_shared<AutogradMeta>();
      y.set_autograd_meta(meta);
    }
    TG_CHECK(!meta->requires_grad, "op '{}': its output {} is a leaf parameter", op, y.str());
    meta->is_leaf = false;
    meta->var = static_cast<std::int64_t>(vars_.size());
    meta->generation = generation_;
    vars_.push_back(Var{y.shape(), y.dtype(), y.device(), nullptr});
    node->output_vars.push_back(meta->var);
  }
  nodes_.push_back(std::move(node));
  return true;
}

void Tape::clear() {
  nodes_.clear();
  vars_.clear();
  ++generation_;
}

// ---------------------------------------------------------------- backward

TensorList Tape::run_backward(const TensorList& roots, const TensorList& root_grads,
                              const std::vector<std::int64_t>& target_vars, BackwardOptions options) {
  const bool retain = options.retain_graph || options.create_graph;
  GradModeGuard mode(options.create_graph);

  // Which vars lead to a target? One forward sweep over the tape (recording order is topological).
  std::vector<char> reaches(vars_.size(), 0);
  for (std::int64_t v : target_vars) reaches[static_cast<std::size_t>(v)] = 1;
  const std::size_t n_nodes = nodes_.size();  // nodes appended below (create_graph) are not visited
  std::vector<char> node_relevant(n_nodes, 0);
  for (std::size_t i = 0; i < n_nodes; ++i) {
    const Node& node = *nodes_[i];
    bool any = false;
    for (std::int64_t v : node.input_vars) any = any || (v >= 0 && reaches[static_cast<std::size_t>(v)]);
    if (!any) continue;
    node_relevant[i] = 1;
    for (std::int64_t v : node.output_vars) reaches[static_cast<std::size_t>(v)] = 1;
  }

  std::vector<Tensor> grads(vars_.size());
  auto accumulate = [&](std::int64_t v, const Tensor& g) {
    Tensor& slot = grads[static_cast<std::size_t>(v)];
    slot = slot.defined() ? add(slot, g) : g;
  };
  for (std::size_t r = 0; r < roots.size(); ++r) {
    const std::int64_t v = roots[r].autograd_meta()->var;
    accumulate(v, root_grads[r]);
  }

  std::vector<char> is_target(vars_.size(), 0);
  for (std::int64_t v : target_vars) is_target[static_cast<std::size_t>(v)] = 1;

  for (std::size_t i = n_nodes; i-- > 0;) {
    if (!node_relevant[i]) continue;
    Node& node = *nodes_[i];
    bool any_grad = false;
    for (std::int64_t v : node.output_vars) any_grad = any_grad || grads[static_cast<std::size_t>(v)].defined();
    if (!any_grad) continue;
    if (!node.backward) {
      throw Error(fmt::format("backward through op '{}' a second time: its saved tensors were released by an "
                              "earlier backward (pass retain_graph to keep them)",
                              node.op));
    }
    for (const auto& [storage, version] : node.input_versions) {
      if (storage->version() != version) {
        throw Error(fmt::format("backward of op '{}': one of its inputs was modified in place after the op was "
                                "recorded (storage version {} -> {}); clear the tape before updating tensors "
                                "in place",
                                node.op, version, storage->version()));
      }
    }
    TensorList grad_outputs;
    grad_outputs.reserve(node.output_vars.size());
    for (std::int64_t v : node.output_vars) {
      const Var& var = vars_[static_cast<std::size_t>(v)];
      Tensor g = grads[static_cast<std::size_t>(v)];
      grad_outputs.push_back(g.defined() ? g : Tensor::zeros(var.shape, var.dtype, var.device));
    }
    std::vector<bool> needs(node.input_vars.size());
    for (std::size_t k = 0; k < needs.size(); ++k) {
      const std::int64_t v = node.input_vars[k];
      needs[k] = v >= 0 && reaches[static_cast<std::size_t>(v)];
    }

    TensorList grad_inputs = node.backward(grad_outputs, needs);

    TG_CHECK(grad_inputs.size() == node.input_vars.size(),
             "backward rule of op '{}' returned {} gradients for {} inputs", node.op, grad_inputs.size(),
             node.input_vars.size());
    for (std::size_t k = 0; k < grad_inputs.size(); ++k) {
      if (!needs[k]) continue;
      const Tensor& g = grad_inputs[k];
      if (!g.defined()) continue;  // the rule knows this input's gradient is zero
      const Var& var = vars_[static_cast<std::size_t>(node.input_vars[k])];
      TG_CHECK(g.shape() == var.shape && g.dtype() == var.dtype,
               "backward rule of op '{}' returned a gradient {} for input {} of shape {} {}", node.op, g.str(), k,
               shape_str(var.shape), dtype_name(var.dtype));
      accumulate(node.input_vars[k], g);
    }
    if (!retain) {
      node.backward = nullptr;  // frees the saved tensors now, not at clear()
      node.input_versions.clear();
    }
    for (std::int64_t v : node.output_vars) {
      if (!is_target[static_cast<std::size_t>(v)]) grads[static_cast<std::size_t>(v)] = Tensor();
    }
  }

  TensorList result;
  result.reserve(target_vars.size());
  for (std::int64_t v : target_vars) result.push_back(grads[static_cast<std::size_t>(v)]);
  return result;
}

namespace {
Tensor seed_for(const Tensor& root, std::size_t r) {
  TG_CHECK(root.numel() == 1, "backward: output {} (root {}) is not a single value; pass its gradient explicitly",
           root.str(), r);
  return Tensor::full(root.shape(), 1.0, root.dtype(), root.device());
}
}  // namespace

TensorList Tape::grad(const TensorList& roots, const TensorList& inputs, const TensorList& root_grads,
                      BackwardOptions options) {
  TG_CHECK(root_grads.empty() || root_grads.size() == roots.size(),
           "grad: {} root gradients given for {} roots", root_grads.size(), roots.size());
  TensorList live_roots, seeds;
  for (std::size_t r = 0; r < roots.size(); ++r) {
    TG_CHECK(roots[r].defined(), "grad: root {} is undefined", r);
    Tensor seed = root_grads.empty() ? seed_for(roots[r], r) : root_grads[r];
    TG_CHECK(seed.shape() == roots[r].shape(), "grad: gradient {} for root {} of shape {}", seed.str(), r,
             roots[r].str());
    if (!tracks(roots[r]) || roots[r].autograd_meta()->is_leaf) continue;  // constant root: contributes nothing
    live_roots.push_back(roots[r]);
    seeds.push_back(seed);
  }
  std::vector<std::int64_t> target_vars;
  std::vector<std::int64_t> slot_of_input(inputs.size(), -1);
  for (std::size_t k = 0; k < inputs.size(); ++k) {
    TG_CHECK(inputs[k].defined(), "grad: input {} is undefined", k);
    const std::int64_t v = var_of(inputs[k]);
    if (v < 0) continue;
    slot_of_input[k] = static_cast<std::int64_t>(target_vars.size());
    target_vars.push_back(v);
  }
  TensorList found = live_roots.empty() ? TensorList(target_vars.size())
                                        : run_backward(live_roots, seeds, target_vars, options);
  TensorList result;
  for (std::size_t k = 0; k < inputs.size(); ++k) {
    Tensor g = slot_of_input[k] >= 0 ? found[static_cast<std::size_t>(slot_of_input[k])] : Tensor();
    // An input no root depends on has a zero gradient.
    result.push_back(g.defined() ? g : Tensor::zeros(inputs[k].shape(), inputs[k].dtype(), inputs[k].device()));
  }
  return result;
}

void Tape::backward(const Tensor& root, const Tensor& root_grad, BackwardOptions options) {
  TG_CHECK(root.defined(), "backward: root is undefined");
  TG_CHECK(tracks(root) && !root.autograd_meta()->is_leaf,
           "backward: {} was not produced by an op recorded on the tape (nothing it depends on requires a "
           "gradient, or it was computed under no-grad or before tape().clear())",
           root.str());
  Tensor seed = root_grad.defined() ? root_grad : seed_for(root, 0);
  TG_CHECK(seed.shape() == root.shape(), "backward: gradient {} for root {}", seed.str(), root.str());
  std::vector<std::int64_t> leaf_vars;
  for (std::size_t v = 0; v < vars_.size(); ++v) {
    if (vars_[v].leaf) leaf_vars.push_back(static_cast<std::int64_t>(v));
  }
  TensorList grads = run_backward({root}, {seed}, leaf_vars, options);
  GradModeGuard mode(options.create_graph);
  for (std::size_t k = 0; k < leaf_vars.size(); ++k) {
    if (!grads[k].defined()) continue;
    AutogradMeta& leaf = *vars_[static_cast<std::size_t>(leaf_vars[k])].leaf;
    if (!leaf.grad.defined()) {
      // A private copy: later accumulations write into .grad in place, and grads[k] may be shared.
      leaf.grad = options.create_graph ? grads[k] : grads[k].clone();
    } else if (options.create_graph) {
      leaf.grad = add(leaf.grad, grads[k]);
    } else {
      add_(leaf.grad, grads[k]);
    }
  }
}

}  // namespace tg
