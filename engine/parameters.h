// ParameterTable: every parameter of a model in ONE flat buffer, and every gradient in a second one.
//
// Each named parameter is a leaf view into the flat value buffer whose .grad is the matching view into
// the flat gradient buffer. Optimizers, clipping, gradient transforms and per-parameter reductions
// are then single passes over the flat buffers (segment boundaries in `offsets()`), and zeroing the
// gradients is one fill.
//
// Segments start at multiples of kAlignment elements (256 bytes for f32) so GPU kernels can use
// aligned vector loads; the padding between segments holds zeros in both buffers and stays zero
// under every optimizer (zero gradient, zero value).
#pragma once

#include <string>
#include <vector>

#include "engine/tape.h"
#include "engine/tensor.h"

namespace tg {

struct ParameterSpec {
  std::string name;  // PyTorch state-dict name, e.g. "layers.0.attn.in_proj_weight"
  Shape shape;
};

class ParameterTable {
 public:
  static constexpr std::int64_t kAlignment = 64;

  ParameterTable() = default;
  ParameterTable(std::vector<ParameterSpec> specs, DType dtype, Device device);

  std::size_t size() const { return specs_.size(); }
  const std::vector<ParameterSpec>& specs() const { return specs_; }
  const std::string& name(std::size_t i) const { return specs_[i].name; }
  std::size_t index_of(const std::string& name) const;  // throws naming the missing parameter
  bool contains(const std::string& name) const;

  const Tensor& operator[](std::size_t i) const { return values_[i]; }
  const Tensor& at(const std::string& name) const { return values_[index_of(name)]; }
  const TensorList& values() const { return values_; }  // leaf views, in spec order

  const Tensor& flat_values() const { return flat_values_; }  // [padded total]
  const Tensor& flat_grads() const { return flat_grads_; }
  std::int64_t offset(std::size_t i) const { return offsets_[i]; }
  const std::vector<std::int64_t>& offsets() const { return offsets_; }  // size() + 1 entries
  std::int64_t numel() const;  // parameters only, without padding
  std::int64_t padded_numel() const { return flat_values_.numel(); }

  DType dtype() const { return dtype_; }
  Device device() const { return device_; }

  // Frozen parameters (e.g. GrokTransfer's fixed A) get no updates at all: their leaf no longer requires
  // a gradient (so backward leaves their gradient segment at zero) and every optimizer leaves their
  // values and state segments exactly unchanged (optim/optimizer.cpp).
  void set_frozen(std::size_t i, bool frozen);
  bool frozen(std::size_t i) const { return frozen_[i]; }
  bool any_frozen() const;

  void zero_grad() const;  // the buffer changes, not the table
  // A buffer shaped like the flat parameters (optimizer state), zero-filled.
  Tensor zeros_like_flat() const;
  // View of segment i of any flat buffer with this table's layout, shaped like parameter i.
  Tensor segment(const Tensor& flat, std::size_t i) const;

 private:
  std::vector<ParameterSpec> specs_;
  std::vector<std::int64_t> offsets_;
  Tensor flat_values_, flat_grads_;
  TensorList values_;
  std::vector<bool> frozen_;
  DType dtype_ = DType::f32;
  Device device_;
};

}  // namespace tg
