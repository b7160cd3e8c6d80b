// The compiled half of the Python package `tapegrok` (python/tapegrok/__init__.py is the other):
// tensors to and from NumPy, the ops and the tape, training with the CLI's own flag parser, and runs
// loaded from checkpoints. Engine errors arrive as tapegrok.Error with the engine's message.
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <optional>

#include "engine/error.h"
#include "engine/ops.h"
#include "engine/second_order.h"
#include "engine/tape.h"
#include "experiments/cli/train_command.h"
#include "experiments/training/checkpoint.h"
#include "experiments/training/trainer.h"
#include "kernels/cpu/float_mode.h"
#include "kernels/cpu/openblas_core.h"
#include "models/transformer.h"

namespace py = pybind11;
using namespace tg;

namespace {

py::dtype numpy_dtype(DType dtype) {
  switch (dtype) {
    case DType::f32: return py::dtype::of<float>();
    case DType::f64: return py::dtype::of<double>();
    case DType::i32: return py::dtype::of<std::int32_t>();
  }
  throw Error("unknown dtype");
}

// A tensor's values as a read-only NumPy array. On the CPU it is a view of the tensor's memory (no
// copy) that holds a handle on that memory: it stays valid after the tensor, or the model it belongs
// to, is gone, and it shows later in-place updates. Read-only because writes through it would bypass
// the engine's storage versions. Tensors on a GPU are copied.
py::array numpy_view(const Tensor& tensor) {
  const Tensor t = tensor.device().is_cpu() ? tensor.detach() : tensor.to(Device::cpu());
  const auto item = static_cast<py::ssize_t>(dtype_size(t.dtype()));
  std::vector<py::ssize_t> shape, strides;
  for (std::int64_t d = 0; d < t.dim(); ++d) {
    shape.push_back(t.shape()[static_cast<std::size_t>(d)]);
    strides.push_back(t.strides()[static_cast<std::size_t>(d)] * item);
  }
  py::array array(numpy_dtype(t.dtype()), shape, strides, t.raw_data(), py::cast(t));
  array.attr("setflags")(py::arg("write") = false);
  return array;
}

// A NumPy array (or anything np.asarray takes) copied into a new CPU tensor: float32, float64 and
// int32 as they are; other integer arrays (Python ints give int64) to int32 when every value fits.
Tensor tensor_from_numpy(const py::handle& data) {
  py::array array = py::array::ensure(data);
  TG_CHECK(array, "tapegrok.Tensor: cannot read {} as an array", std::string(py::str(py::type::of(data))));
  const py::dtype dtype = array.dtype();
  DType engine_dtype;
  if (dtype.is(py::dtype::of<float>())) {
    engine_dtype = DType::f32;
  } else if (dtype.is(py::dtype::of<double>())) {
    engine_dtype = DType::f64;
  } else if (dtype.kind() == 'i' || dtype.kind() == 'u' || dtype.kind() == 'b') {
    py::array wide = py::array_t<std::int64_t, py::array::forcecast>::ensure(array);
    const auto* values = static_cast<const std::int64_t*>(wide.data());
    for (py::ssize_t i = 0; i < wide.size(); ++i) {
      TG_CHECK(values[i] >= INT32_MIN && values[i] <= INT32_MAX,
               "tapegrok.Tensor: integer {} at flat index {} does not fit int32 (token ids and targets are int32)",
               values[i], i);
    }
    array = py::array_t<std::int32_t, py::array::forcecast>::ensure(wide);
    engine_dtype = DType::i32;
  } else {
    throw Error(fmt::format("tapegrok.Tensor: dtype {} is not supported (float32, float64 or integers)",
                            std::string(py::str(static_cast<const py::handle&>(dtype)))));
  }
  array = py::array::ensure(array, py::array::c_style);
  Shape shape;
  for (py::ssize_t d = 0; d < array.ndim(); ++d) shape.push_back(array.shape(d));
  Tensor t = Tensor::empty(shape, engine_dtype);
  if (t.numel() > 0) std::memcpy(t.raw_data(), array.data(), static_cast<std::size_t>(array.nbytes()));
  return t;
}

Tensor as_tensor(const py::handle& x) {
  if (py::isinstance<Tensor>(x)) return x.cast<Tensor>();
  return tensor_from_numpy(x);
}

py::object json_to_python(const nlohmann::json& j) {
  return py::module_::import("json").attr("loads")(j.dump());
}

py::list tensor_list(const TensorList& tensors) {
  py::list out;
  for (const Tensor& t : tensors) out.append(t.defined() ? py::cast(t) : py::none());
  return out;
}

// A finished (or resumed-from) run, loaded from its checkpoint for study: parameters, forward, data.
class LoadedModel {
 public:
  LoadedModel(const std::string& checkpoint, const std::string& device) : checkpoint_(checkpoint) {
    TrainConfig config = config_from_checkpoint(checkpoint);
    config.device = device;
    trainer_ = std::make_unique<Trainer>(config, /*restoring=*/true);
    trainer_->load_checkpoint(checkpoint);
  }

  py::dict parameters() const {
    py::dict out;
    const ParameterTable& params = trainer_->params();
    for (std::size_t i = 0; i < params.size(); ++i) out[py::str(params.name(i))] = numpy_view(params[i]);
    return out;
  }

  // ids: int [n, seq_len] -> logits [n, answers], without recording on the tape.
  py::array forward(const py::handle& ids_data) const {
    Tensor ids = tensor_from_numpy(ids_data);
    const Dataset& data = trainer_->dataset();
    TG_CHECK(ids.dtype() == DType::i32 && ids.dim() == 2 && ids.size(1) == data.seq_len,
             "Model.forward: expected integer token ids of shape [n, {}], got {}", data.seq_len, ids.str());
    py::gil_scoped_release release;
    NoGradGuard no_grad;
    const Tensor logits = trainer_->model().forward(trainer_->params().values(), ids.to(trainer_->device()));
    py::gil_scoped_acquire acquire;
    return numpy_view(logits.to(Device::cpu()).contiguous());
  }

  // Transformer runs: per layer, the MLP neurons' activations after GELU at the answer position,
  // [n, hidden] (the input of Nanda et al.'s neuron analysis).
  py::dict mlp_activations(const py::handle& ids_data) const {
    const auto* transformer = dynamic_cast<const Transformer*>(&trainer_->model());
    TG_CHECK(transformer != nullptr, "Model.mlp_activations: the {} model has no Transformer MLP",
             trainer_->model().name());
    Tensor ids = tensor_from_numpy(ids_data);
    const Dataset& data = trainer_->dataset();
    TG_CHECK(ids.dtype() == DType::i32 && ids.dim() == 2 && ids.size(1) == data.seq_len,
             "Model.mlp_activations: expected integer token ids of shape [n, {}], got {}", data.seq_len, ids.str());
    Transformer::Activations captured;
    {
      py::gil_scoped_release release;
      NoGradGuard no_grad;
      transformer->forward(trainer_->params().values(), ids.to(trainer_->device()), &captured);
    }
    py::dict out;
    for (std::size_t layer = 0; layer < captured.mlp_hidden.size(); ++layer) {
      const Tensor& hidden = captured.mlp_hidden[layer];  // [n, S, hidden]
      const Tensor last = slice(hidden, 1, hidden.size(1) - 1, 1);
      out[py::str(fmt::format("layers.{}.mlp", layer))] =
          numpy_view(reshape(last.contiguous(), {hidden.size(0), hidden.size(2)}).to(Device::cpu()));
    }
    return out;
  }

  py::dict dataset() const {
    const Dataset& d = trainer_->dataset();
    const Split& s = trainer_->split();
    py::dict out;
    out["task"] = d.task;
    out["modulus"] = d.modulus;
    out["layout"] = task_layout_name(d.layout);
    out["vocab"] = d.vocab;
    out["seq_len"] = d.seq_len;
    out["inputs"] = py::array_t<std::int32_t>({d.size(), d.seq_len}, d.inputs.data());
    out["targets"] = py::array_t<std::int32_t>(d.size(), d.targets.data());
    out["train"] = py::array_t<std::int64_t>(static_cast<py::ssize_t>(s.train.size()), s.train.data());
    out["outer"] = py::array_t<std::int64_t>(static_cast<py::ssize_t>(s.outer.size()), s.outer.data());
    out["test"] = py::array_t<std::int64_t>(static_cast<py::ssize_t>(s.test.size()), s.test.data());
    return out;
  }

  py::dict evaluate(const std::string& split) const {
    const Split& s = trainer_->split();
    const std::vector<std::int64_t>* examples = split == "train"   ? &s.train
                                                : split == "test"  ? &s.test
                                                : split == "outer" ? &s.outer
                                                                   : nullptr;
    TG_CHECK(examples != nullptr, "Model.evaluate: split '{}': expected train, outer or test", split);
    TG_CHECK(!examples->empty(), "Model.evaluate: the {} split is empty", split);
    EvalStats e;
    {
      py::gil_scoped_release release;
      e = trainer_->evaluate(*examples);
    }
    py::dict out;
    out["loss"] = e.loss;
    out["accuracy"] = e.accuracy;
    out["examples"] = e.examples;
    return out;
  }

  py::object config() const { return json_to_python(to_json(trainer_->config())); }
  std::int64_t step() const { return trainer_->progress().step; }
  const std::string& checkpoint() const { return checkpoint_; }

 private:
  std::string checkpoint_;
  std::unique_ptr<Trainer> trainer_;
};

// The train flags as the CLI defines them: name -> (default text, help), in the CLI's order.
py::list train_flag_table() {
  CLI::App parent;
  TrainCommand train(parent);
  py::list out;
  for (const CLI::Option* opt : train.app()->get_options()) {
    const std::vector<std::string> names = opt->get_lnames();
    if (names.empty() || names[0] == "help") continue;
    out.append(py::make_tuple(names[0], opt->get_default_str(), opt->get_description(), opt->get_expected_min() == 0));
  }
  return out;
}

}  // namespace

PYBIND11_MODULE(_tapegrok, m) {
  m.doc() = "tapegrok's engine (the compiled part of the tapegrok package)";
  py::register_exception<Error>(m, "Error", PyExc_RuntimeError);

  // ---- tensors
  py::class_<Tensor>(m, "Tensor", "An engine tensor (CPU unless it came from a GPU run).")
      .def(py::init([](const py::handle& data, bool requires_grad) {
             Tensor t = tensor_from_numpy(data);
             if (requires_grad) t.set_requires_grad(true);
             return t;
           }),
           py::arg("data"), py::arg("requires_grad") = false,
           "A tensor holding a copy of `data` (float32, float64 or integers as int32); requires_grad makes "
           "it a leaf whose gradient backward() accumulates.")
      .def("numpy", &numpy_view, "The values as a read-only NumPy array (a view on the CPU, see tapegrok.Tensor)")
      .def("__array__", [](const Tensor& t, py::object) { return numpy_view(t); }, py::arg("dtype") = py::none())
      .def_property_readonly("shape", [](const Tensor& t) { return py::tuple(py::cast(t.shape())); })
      .def_property_readonly("dtype", [](const Tensor& t) { return std::string(dtype_name(t.dtype())); })
      .def_property_readonly("device", [](const Tensor& t) { return t.device().str(); })
      .def_property("requires_grad", &Tensor::requires_grad,
                    [](Tensor& t, bool on) { t.set_requires_grad(on); })
      .def_property_readonly("grad", [](const Tensor& t) -> std::optional<Tensor> {
        const Tensor g = t.grad();
        return g.defined() ? std::optional(g) : std::nullopt;
      }, "The gradient accumulated into this leaf by backward(), or None")
      .def("zero_grad", [](Tensor& t) { t.set_grad(Tensor()); }, "Forget the accumulated gradient")
      .def("item", &Tensor::item)
      .def("detach", &Tensor::detach)
      .def("backward", [](const Tensor& t, const py::object& g, bool create_graph) {
             BackwardOptions options;
             options.create_graph = create_graph;
             backward(t, g.is_none() ? Tensor() : as_tensor(g), options);
           },
           py::arg("grad") = py::none(), py::arg("create_graph") = false,
           "Accumulate d(this)/d(leaf) into every leaf's .grad (this must have one element unless grad is given)")
      .def("__repr__", [](const Tensor& t) { return "tapegrok.Tensor(" + t.str() + ")"; })
      .def("__add__", [](const Tensor& a, const py::handle& b) {
        return py::isinstance<py::float_>(b) || py::isinstance<py::int_>(b) ? add_scalar(a, b.cast<double>())
                                                                            : add(a, as_tensor(b));
      })
      .def("__radd__", [](const Tensor& a, double b) { return add_scalar(a, b); })
      .def("__sub__", [](const Tensor& a, const py::handle& b) {
        return py::isinstance<py::float_>(b) || py::isinstance<py::int_>(b) ? add_scalar(a, -b.cast<double>())
                                                                            : sub(a, as_tensor(b));
      })
      .def("__rsub__", [](const Tensor& a, double b) { return affine(a, -1.0, b); })
      .def("__mul__", [](const Tensor& a, const py::handle& b) {
        return py::isinstance<py::float_>(b) || py::isinstance<py::int_>(b) ? scale(a, b.cast<double>())
                                                                            : mul(a, as_tensor(b));
      })
      .def("__rmul__", [](const Tensor& a, double b) { return scale(a, b); })
      .def("__truediv__", [](const Tensor& a, const py::handle& b) {
        return py::isinstance<py::float_>(b) || py::isinstance<py::int_>(b) ? scale(a, 1.0 / b.cast<double>())
                                                                            : div(a, as_tensor(b));
      })
      .def("__neg__", [](const Tensor& a) { return neg(a); })
      .def("__matmul__", [](const Tensor& a, const py::handle& b) { return matmul(a, as_tensor(b)); });

  // ---- ops (engine/ops.h); each records on the tape when an input requires a gradient
  m.def("openblas_core", &cpu::openblas_core, "the OpenBLAS kernels the GEMMs run on (e.g. 'SkylakeX')");
  m.def("flush_subnormals", &cpu::flush_subnormals,
        "whether the CPU kernels flush subnormal floats to zero (default True; TAPEGROK_FLUSH_SUBNORMALS=0 turns it off)");
  m.def("set_flush_subnormals", &cpu::set_flush_subnormals, py::arg("flush"),
        "flush subnormal floats to zero in the CPU kernels from now on (faster second order; see docs/architecture.md)");
  m.def("matmul", [](const Tensor& a, const Tensor& b, bool ta, bool tb) { return matmul(a, b, ta, tb); },
        py::arg("a"), py::arg("b"), py::arg("transpose_a") = false, py::arg("transpose_b") = false,
        "[.., m, k] @ [k, n] (2-D or batched)");
  m.def("linear", [](const Tensor& x, const Tensor& w, const std::optional<Tensor>& b) {
          return linear(x, w, b.value_or(Tensor()));
        }, py::arg("x"), py::arg("weight"), py::arg("bias") = py::none(), "x @ weight^T + bias (PyTorch's layout)");
  for (const auto& [name, fn] : std::vector<std::pair<const char*, Tensor (*)(const Tensor&, const Tensor&)>>{
           {"add", &add}, {"sub", &sub}, {"mul", &mul}, {"div", &div}}) {
    m.def(name, fn, py::arg("a"), py::arg("b"), "elementwise, with broadcasting");
  }
  for (const auto& [name, fn] : std::vector<std::pair<const char*, Tensor (*)(const Tensor&)>>{
           {"neg", &neg}, {"exp", &tg::exp}, {"log", &tg::log}, {"abs", &tg::abs}, {"sqrt", &tg::sqrt},
           {"square", &square}, {"relu", &relu}, {"gelu", &gelu}, {"softmax", &softmax}, {"l2_norm", &l2_norm},
           {"argmax", &argmax}}) {
    m.def(name, fn, py::arg("x"));
  }
  m.def("sum", [](const Tensor& x, std::optional<std::int64_t> dim, bool keepdim) {
          return dim ? sum(x, *dim, keepdim) : sum(x);
        }, py::arg("x"), py::arg("dim") = py::none(), py::arg("keepdim") = false);
  m.def("mean", [](const Tensor& x, std::optional<std::int64_t> dim, bool keepdim) {
          return dim ? mean(x, *dim, keepdim) : mean(x);
        }, py::arg("x"), py::arg("dim") = py::none(), py::arg("keepdim") = false);
  m.def("cross_entropy", &cross_entropy, py::arg("logits"), py::arg("targets"),
        "mean cross-entropy of logits [n, classes] against int32 targets [n]");
  m.def("stablemax_cross_entropy", &stablemax_cross_entropy, py::arg("logits"), py::arg("targets"));
  m.def("layernorm", &layernorm, py::arg("x"), py::arg("gamma"), py::arg("beta"), py::arg("eps") = 1e-5);
  m.def("embedding", &embedding, py::arg("ids"), py::arg("weight"));
  m.def("reshape", &reshape, py::arg("x"), py::arg("shape"));
  m.def("transpose", &transpose, py::arg("x"), py::arg("dim0"), py::arg("dim1"));
  m.def("concat", &concat, py::arg("tensors"), py::arg("dim"));

  // ---- the tape
  m.def("grad", [](const TensorList& outputs, const TensorList& inputs, const TensorList& grad_outputs,
                   bool create_graph) {
          BackwardOptions options;
          options.create_graph = create_graph;
          return tensor_list(grad(outputs, inputs, grad_outputs, options));
        },
        py::arg("outputs"), py::arg("inputs"), py::arg("grad_outputs") = TensorList{},
        py::arg("create_graph") = false,
        "d(outputs)/d(inputs), not accumulated into .grad; create_graph records it for second order");
  m.def("hvp", [](const Tensor& loss, const TensorList& params, const TensorList& v) {
          return tensor_list(hessian_vector_product(loss, params, v));
        }, py::arg("loss"), py::arg("params"), py::arg("v"),
        "Hessian-vector product H v of a one-element loss, by replaying the tape backward twice");
  m.def("clear_tape", [] { tape().clear(); },
        "Drop every recorded node (leaves keep their .grad); call between independent computations");
  m.def("tape_size", [] { return tape().num_nodes(); });
  py::class_<GradModeGuard>(m, "_GradMode");
  m.def("_set_grad_mode", [](bool enabled) { return std::make_unique<GradModeGuard>(enabled); });

  // ---- training and runs
  m.def("_train", [](const std::vector<std::string>& flags, const std::optional<py::function>& on_evaluation,
                     bool print) {
          const TrainRequest request = parse_train_flags(flags);
          // A plain pointer: the callback is copied and destroyed without the GIL, a py::function must not be.
          const py::function* user = on_evaluation ? &*on_evaluation : nullptr;
          auto callback = [user](const nlohmann::json& record) {
            py::gil_scoped_acquire acquire;
            if (PyErr_CheckSignals() != 0) throw py::error_already_set();  // Ctrl-C in a notebook stops the run
            if (user != nullptr) (*user)(json_to_python(record));
          };
          RunProgress progress;
          {
            py::gil_scoped_release release;
            progress = run_training(request, callback, print);
          }
          py::dict out;
          out["run_dir"] = request.config.run_dir;
          out["progress"] = json_to_python(progress_to_json(progress));
          return out;
        },
        py::arg("flags"), py::arg("on_evaluation") = py::none(), py::arg("print") = false);
  m.def("_train_flags", &train_flag_table);

  py::class_<LoadedModel>(m, "Model", "A run loaded from its checkpoint: tapegrok.load(path)")
      .def_property_readonly("parameters", &LoadedModel::parameters,
                             "name (PyTorch state-dict names) -> read-only NumPy view of the weights (CPU runs: no "
                             "copy; each array keeps its memory alive on its own)")
      .def("forward", &LoadedModel::forward, py::arg("ids"), "int token ids [n, seq_len] -> logits [n, answers]")
      .def("mlp_activations", &LoadedModel::mlp_activations, py::arg("ids"),
           "per layer ('layers.0.mlp', ...): the MLP activations after GELU at the answer position, [n, hidden]")
      .def_property_readonly("dataset", &LoadedModel::dataset,
                             "the task's examples (inputs, targets) and the run's train/outer/test indices")
      .def("evaluate", &LoadedModel::evaluate, py::arg("split") = "test", "loss and accuracy on a split")
      .def_property_readonly("config", &LoadedModel::config)
      .def_property_readonly("step", &LoadedModel::step)
      .def_property_readonly("checkpoint", &LoadedModel::checkpoint)
      .def("__repr__", [](const LoadedModel& model) {
        return fmt::format("tapegrok.Model({}, step {})", model.checkpoint(), model.step());
      });
  m.def("load", [](const std::string& checkpoint, const std::string& device) {
          return std::make_unique<LoadedModel>(checkpoint, device);
        }, py::arg("checkpoint"), py::arg("device") = "cpu", "Load a run's checkpoint.safetensors");
}
