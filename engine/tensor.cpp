#include "engine/tensor.h"

#include <fmt/format.h>

#include <cstring>

#include "engine/backend.h"
#include "engine/error.h"
#include "engine/tape.h"

namespace tg {

namespace {
bool g_poison = false;
}

void set_poison_new_tensors(bool on) { g_poison = on; }
bool poison_new_tensors() { return g_poison; }

std::int64_t shape_numel(const Shape& shape) {
  std::int64_t n = 1;
  for (std::int64_t s : shape) n *= s;
  return n;
}

Shape contiguous_strides(const Shape& shape) {
  Shape strides(shape.size());
  std::int64_t stride = 1;
  for (std::size_t i = shape.size(); i-- > 0;) {
    strides[i] = stride;
    stride *= shape[i];
  }
  return strides;
}

std::string shape_str(const Shape& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

// ---------------------------------------------------------------- Storage

Storage::Storage(std::size_t nbytes, Device device) : nbytes_(nbytes), device_(device) {
  allocator_ = &backend_for(device).allocator();
  data_ = allocator_->allocate(nbytes);
}

Storage::~Storage() { allocator_->deallocate(data_, nbytes_); }

// ---------------------------------------------------------------- factories

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  for (std::int64_t s : shape) {
    TG_CHECK(s >= 0, "Tensor::empty: negative dimension in shape {}", shape_str(shape));
  }
  TG_CHECK(device.is_cpu() || dtype != DType::f64,
           "Tensor::empty: f64 tensors live on the CPU only (asked for {} {} on {})", shape_str(shape),
           dtype_name(dtype), device.str());
  Tensor t;
  const std::size_t nbytes = static_cast<std::size_t>(shape_numel(shape)) * dtype_size(dtype);
  try {
    t.storage_ = std::make_shared<Storage>(nbytes, device);
  } catch (const Error& e) {  // out of memory: say which tensor (op outputs and scratch all come here)
    throw Error(fmt::format("{} (allocating a {} tensor of shape {} on {})", e.what(), dtype_name(dtype),
                            shape_str(shape), device.str()));
  }
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  t.dtype_ = dtype;
  t.device_ = device;
  // Every fresh tensor carries (empty) autograd state, shared by all copies of the handle, so that
  // a backward rule that captures an op's output sees it once the op is recorded.
  t.meta_ = std::make_shared<AutogradMeta>();
  if (g_poison && nbytes > 0) backend_for(device).fill_bytes(t.storage_->data(), 0xFF, nbytes);
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  return full(shape, 0.0, dtype, device);
}

Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  if (t.numel() > 0) backend_for(device).fill(t, value);
  return t;
}

Tensor Tensor::scalar(double value, DType dtype, Device device) { return full({}, value, dtype, device); }

template <class T>
Tensor Tensor::from_vector(const std::vector<T>& values, const Shape& shape, Device device) {
  TG_CHECK(static_cast<std::int64_t>(values.size()) == shape_numel(shape),
           "Tensor::from_vector: {} values do not fill shape {}", values.size(), shape_str(shape));
  Tensor t = empty(shape, dtype_of<T>(), device);
  if (!values.empty()) backend_for(device).copy_from_host(t.raw_data(), values.data(), values.size() * sizeof(T));
  return t;
}
template Tensor Tensor::from_vector(const std::vector<float>&, const Shape&, Device);
template Tensor Tensor::from_vector(const std::vector<double>&, const Shape&, Device);
template Tensor Tensor::from_vector(const std::vector<std::int32_t>&, const Shape&, Device);

// ---------------------------------------------------------------- metadata

std::int64_t Tensor::size(std::int64_t d) const {
  const std::int64_t n = dim();
  const std::int64_t i = d < 0 ? d + n : d;
  TG_CHECK(i >= 0 && i < n, "Tensor::size: dimension {} out of range for {}", d, str());
  return shape_[static_cast<std::size_t>(i)];
}

bool Tensor::is_contiguous() const {
  std::int64_t expected = 1;
  for (std::size_t i = shape_.size(); i-- > 0;) {
    if (shape_[i] == 1) continue;  // the stride of a size-1 dimension never matters
    if (strides_[i] != expected) return false;
    expected *= shape_[i];
  }
  return true;
}

std::string Tensor::str() const {
  if (!defined()) return "(undefined tensor)";
  return fmt::format("{} {} {}", shape_str(shape_), dtype_name(dtype_), device_.str());
}

void* Tensor::raw_data() const {
  TG_CHECK(defined(), "raw_data: tensor is undefined");
  return static_cast<char*>(storage_->data()) + offset_ * static_cast<std::int64_t>(dtype_size(dtype_));
}

template <class T>
T* Tensor::data() const {
  TG_CHECK(dtype_ == dtype_of<T>(), "data<{}>: tensor {} has another dtype", dtype_name(dtype_of<T>()), str());
  return static_cast<T*>(raw_data());
}
template float* Tensor::data<float>() const;
template double* Tensor::data<double>() const;
template std::int32_t* Tensor::data<std::int32_t>() const;

// ---------------------------------------------------------------- kernel layouts

KernelLayout kernel_layout(const Tensor& t, const char* op) {
  KernelLayout v;
  for (std::int64_t d = 0; d < t.dim(); ++d) {
    const std::int64_t size = t.shape()[static_cast<std::size_t>(d)];
    const std::int64_t stride = t.strides()[static_cast<std::size_t>(d)];
    if (size == 1) continue;  // its stride is irrelevant
    if (v.rank > 0 && v.strides[v.rank - 1] == stride * size) {
      v.shape[v.rank - 1] *= size;
      v.strides[v.rank - 1] = stride;
      continue;
    }
    TG_CHECK(v.rank < kMaxKernelDims, "{}: {} with strides {} has more than {} dimensions that cannot be merged", op,
             t.str(), shape_str(t.strides()), kMaxKernelDims);
    v.shape[v.rank] = size;
    v.strides[v.rank] = stride;
    ++v.rank;
  }
  return v;
}

// ---------------------------------------------------------------- host reads

namespace {
const char* g_host_reads_forbidden_in = nullptr;

void check_host_read(const char* what, const Tensor& t) {
  TG_CHECK(g_host_reads_forbidden_in == nullptr,
           "{} of {} reads device values on the host inside {}, which must never wait for the device", what, t.str(),
           g_host_reads_forbidden_in);
}
}  // namespace

HostReadGuard::HostReadGuard(const char* scope) : previous_(g_host_reads_forbidden_in) {
  g_host_reads_forbidden_in = scope;
}
HostReadGuard::~HostReadGuard() { g_host_reads_forbidden_in = previous_; }
const char* host_reads_forbidden_in() { return g_host_reads_forbidden_in; }

template <class T>
std::vector<T> Tensor::to_vector() const {
  TG_CHECK(dtype_ == dtype_of<T>(), "to_vector<{}>: tensor {} has another dtype", dtype_name(dtype_of<T>()),
           str());
  check_host_read("to_vector", *this);
  Tensor c = contiguous();
  std::vector<T> out(static_cast<std::size_t>(numel()));
  if (!out.empty()) backend_for(device_).copy_to_host(out.data(), c.raw_data(), out.size() * sizeof(T));
  return out;
}
template std::vector<float> Tensor::to_vector() const;
template std::vector<double> Tensor::to_vector() const;
template std::vector<std::int32_t> Tensor::to_vector() const;

double Tensor::item() const {
  TG_CHECK(numel() == 1, "item: tensor {} has {} elements, not one", str(), numel());
  switch (dtype_) {
    case DType::f32: return to_vector<float>()[0];
    case DType::f64: return to_vector<double>()[0];
    case DType::i32: return to_vector<std::int32_t>()[0];
  }
  return 0.0;
}

// ---------------------------------------------------------------- copies and views

Tensor Tensor::to(Device device) const {
  if (device == device_) return *this;
  if (device.is_cpu()) check_host_read("a copy to the CPU", *this);
  Tensor src = contiguous();
  Tensor out = empty(shape_, dtype_, device);
  const std::size_t nbytes = static_cast<std::size_t>(numel()) * dtype_size(dtype_);
  if (nbytes == 0) return out;
  if (device_.is_cpu()) {
    backend_for(device).copy_from_host(out.raw_data(), src.raw_data(), nbytes);
  } else if (device.is_cpu()) {
    backend_for(device_).copy_to_host(out.raw_data(), src.raw_data(), nbytes);
  } else {  // GPU to GPU (different indices) goes through the host: rare, and simple.
    std::vector<char> host(nbytes);
    backend_for(device_).copy_to_host(host.data(), src.raw_data(), nbytes);
    backend_for(device).copy_from_host(out.raw_data(), host.data(), nbytes);
  }
  return out;
}

Tensor Tensor::to(DType dtype) const {
  if (dtype == dtype_) return *this;
  Tensor src = contiguous();
  Tensor out = empty(shape_, dtype, device_);
  if (numel() > 0) backend_for(device_).convert(src, out);
  return out;
}

Tensor Tensor::clone() const {
  Tensor out = empty(shape_, dtype_, device_);
  if (numel() > 0) backend_for(device_).copy(*this, out);
  return out;
}

Tensor Tensor::contiguous() const {
  if (!defined() || is_contiguous()) return *this;
  return clone();
}

Tensor Tensor::as_strided(const Shape& shape, const Shape& strides, std::int64_t offset) const {
  TG_CHECK(shape.size() == strides.size(), "as_strided: shape {} and strides {} differ in rank",
           shape_str(shape), shape_str(strides));
  // Bounds: the furthest element addressed must lie inside the storage.
  std::int64_t last = offset;
  for (std::size_t i = 0; i < shape.size(); ++i) {
    TG_CHECK(shape[i] >= 0 && strides[i] >= 0, "as_strided: negative size or stride in {} / {}",
             shape_str(shape), shape_str(strides));
    if (shape[i] > 0) last += (shape[i] - 1) * strides[i];
  }
  const auto capacity = static_cast<std::int64_t>(storage_->nbytes() / dtype_size(dtype_));
  TG_CHECK(offset >= 0 && (shape_numel(shape) == 0 || last < capacity),
           "as_strided: view {} strides {} offset {} reaches past the storage of {} elements", shape_str(shape),
           shape_str(strides), offset, capacity);
  Tensor v;
  v.storage_ = storage_;
  v.shape_ = shape;
  v.strides_ = strides;
  v.offset_ = offset;
  v.dtype_ = dtype_;
  v.device_ = device_;
  return v;
}

Tensor Tensor::detach() const {
  Tensor v = *this;
  v.meta_.reset();
  return v;
}

void Tensor::fill_(double value) {
  if (numel() == 0) return;
  backend_for(device_).fill(*this, value);
  storage_->bump_version();
}

void Tensor::copy_from_(const Tensor& src) {
  TG_CHECK(src.shape() == shape_ && src.dtype() == dtype_, "copy_from_: source {} does not match destination {}",
           src.str(), str());
  if (numel() == 0) return;
  Tensor s = src.device() == device_ ? src : src.to(device_);
  backend_for(device_).copy(s, *this);
  storage_->bump_version();
}

// ---------------------------------------------------------------- autograd accessors

bool Tensor::requires_grad() const { return meta_ != nullptr && tape_tracks(*this); }

Tensor& Tensor::set_requires_grad(bool on) {
  TG_CHECK(is_floating(dtype_), "set_requires_grad: {} tensors cannot require gradients", dtype_name(dtype_));
  if (!meta_) meta_ = std::make_shared<AutogradMeta>();
  TG_CHECK(meta_->is_leaf, "set_requires_grad: only leaf tensors can be marked; {} is an op's output", str());
  meta_->requires_grad = on;
  return *this;
}

Tensor Tensor::grad() const { return meta_ ? meta_->grad : Tensor(); }

void Tensor::set_grad(const Tensor& grad) {
  TG_CHECK(!grad.defined() || grad.shape() == shape_, "set_grad: gradient {} does not match tensor {}",
           grad.str(), str());
  if (!meta_) meta_ = std::make_shared<AutogradMeta>();
  meta_->grad = grad;
}

}  // namespace tg
