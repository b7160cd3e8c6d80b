#include "engine/parameters.h"

#include <fmt/format.h>

#include "engine/error.h"

namespace tg {

ParameterTable::ParameterTable(std::vector<ParameterSpec> specs, DType dtype, Device device)
    : specs_(std::move(specs)), dtype_(dtype), device_(device) {
  TG_CHECK(is_floating(dtype), "ParameterTable: parameters must be floating, got {}", dtype_name(dtype));
  std::int64_t at = 0;
  for (const ParameterSpec& s : specs_) {
    for (std::size_t j = 0; j < offsets_.size(); ++j) {
      TG_CHECK(specs_[j].name != s.name, "ParameterTable: parameter name '{}' appears twice", s.name);
    }
    offsets_.push_back(at);
    at += (shape_numel(s.shape) + kAlignment - 1) / kAlignment * kAlignment;
  }
  offsets_.push_back(at);
  flat_values_ = Tensor::zeros({at}, dtype, device);
  flat_grads_ = Tensor::zeros({at}, dtype, device);
  for (std::size_t i = 0; i < specs_.size(); ++i) {
    Tensor v = segment(flat_values_, i);
    v.set_requires_grad(true);
    v.set_grad(segment(flat_grads_, i));
    values_.push_back(v);
  }
  frozen_.assign(specs_.size(), false);
}

void ParameterTable::set_frozen(std::size_t i, bool frozen) {
  TG_CHECK(i < specs_.size(), "ParameterTable::set_frozen: no parameter {} (the table has {})", i, specs_.size());
  frozen_[i] = frozen;
  values_[i].set_requires_grad(!frozen);  // shared autograd state: every copy of the leaf sees it
}

bool ParameterTable::any_frozen() const {
  for (bool f : frozen_) {
    if (f) return true;
  }
  return false;
}

std::size_t ParameterTable::index_of(const std::string& name) const {
  for (std::size_t i = 0; i < specs_.size(); ++i) {
    if (specs_[i].name == name) return i;
  }
  throw Error(fmt::format("no parameter named '{}' in this model", name));
}

bool ParameterTable::contains(const std::string& name) const {
  for (const auto& s : specs_) {
    if (s.name == name) return true;
  }
  return false;
}

std::int64_t ParameterTable::numel() const {
  std::int64_t n = 0;
  for (const auto& s : specs_) n += shape_numel(s.shape);
  return n;
}

void ParameterTable::zero_grad() const {
  Tensor g = flat_grads_;
  g.fill_(0.0);
}

Tensor ParameterTable::zeros_like_flat() const { return Tensor::zeros({padded_numel()}, dtype_, device_); }

Tensor ParameterTable::segment(const Tensor& flat, std::size_t i) const {
  TG_CHECK(flat.numel() == padded_numel() && flat.is_contiguous(),
           "ParameterTable::segment: buffer {} does not have this table's flat layout ({} elements)", flat.str(),
           padded_numel());
  const Shape& shape = specs_[i].shape;
  return flat.as_strided(shape, contiguous_strides(shape), flat.offset() + offsets_[i]);
}

}  // namespace tg
