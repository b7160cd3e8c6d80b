// Tensor: a typed, shaped, strided view into a Storage on one device.
//
// A Tensor is a cheap handle (shared storage + shape/strides/offset). Views (reshape, transpose,
// slice, the per-parameter views into a flat buffer) share storage; nothing is copied until an op
// needs contiguous memory. Ops allocate their outputs contiguous.
//
// Autograd state lives in an optional AutogradMeta (engine/tape.h): leaf parameters carry
// requires_grad and a .grad tensor; tensors produced by recorded ops carry their slot on the tape.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/device.h"
#include "engine/dtype.h"

namespace tg {

using Shape = std::vector<std::int64_t>;

std::int64_t shape_numel(const Shape& shape);
Shape contiguous_strides(const Shape& shape);
std::string shape_str(const Shape& shape);  // "[512, 5, 128]"

class Allocator;

// Raw memory on one device. Freed back to the device's caching allocator when the last tensor
// viewing it goes away. `version` counts in-place writes, so the tape can detect a saved tensor
// that was overwritten before backward used it.
class Storage {
 public:
  Storage(std::size_t nbytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  std::size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }
  std::uint64_t version() const { return version_; }
  void bump_version() { ++version_; }

 private:
  void* data_ = nullptr;
  std::size_t nbytes_ = 0;
  Device device_;
  Allocator* allocator_ = nullptr;
  std::uint64_t version_ = 0;
};

struct AutogradMeta;

class Tensor {
 public:
  Tensor() = default;  // undefined; defined() is false

  // ---- factories (all allocate contiguous memory) ----
  static Tensor empty(const Shape& shape, DType dtype, Device device = Device::cpu());
  static Tensor zeros(const Shape& shape, DType dtype, Device device = Device::cpu());
  static Tensor full(const Shape& shape, double value, DType dtype, Device device = Device::cpu());
  static Tensor scalar(double value, DType dtype = DType::f32, Device device = Device::cpu());
  template <class T>
  static Tensor from_vector(const std::vector<T>& values, const Shape& shape, Device device = Device::cpu());

  // ---- metadata ----
  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  const Shape& strides() const { return strides_; }
  std::int64_t offset() const { return offset_; }
  std::int64_t dim() const { return static_cast<std::int64_t>(shape_.size()); }
  std::int64_t size(std::int64_t d) const;  // negative d counts from the back
  std::int64_t numel() const { return shape_numel(shape_); }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  bool is_contiguous() const;
  std::string str() const;  // "[512, 5, 128] f32 cpu", for error messages

  // ---- data access ----
  void* raw_data() const;  // pointer to the first element of this view
  template <class T> T* data() const;  // checks dtype
  const std::shared_ptr<Storage>& storage() const { return storage_; }
  template <class T> std::vector<T> to_vector() const;  // copies to the host, contiguous order
  double item() const;                                  // the value of a one-element tensor

  // ---- copies and views (not recorded on the tape; see engine/ops.h for differentiable ones) ----
  Tensor to(Device device) const;  // explicit copy between devices
  Tensor to(DType dtype) const;    // explicit conversion between floating types (CPU)
  Tensor clone() const;            // contiguous copy, same device and dtype
  Tensor contiguous() const;       // this tensor if already contiguous, else a contiguous copy
  Tensor as_strided(const Shape& shape, const Shape& strides, std::int64_t offset) const;
  Tensor detach() const;           // same storage, no autograd state

  // In-place writes (bump the storage version).
  void fill_(double value);
  void copy_from_(const Tensor& src);  // same shape; any strides; devices may differ

  // ---- autograd ----
  bool requires_grad() const;  // true for leaf parameters and for outputs recorded on the live tape
  Tensor& set_requires_grad(bool on);  // makes this a leaf parameter (or plain tensor again)
  Tensor grad() const;                 // accumulated gradient of a leaf (undefined if none yet)
  void set_grad(const Tensor& grad);   // e.g. a view into a flat gradient buffer
  const std::shared_ptr<AutogradMeta>& autograd_meta() const { return meta_; }
  void set_autograd_meta(std::shared_ptr<AutogradMeta> meta) { meta_ = std::move(meta); }

 private:
  std::shared_ptr<Storage> storage_;
  Shape shape_;
  Shape strides_;
  std::int64_t offset_ = 0;  // in elements
  DType dtype_ = DType::f32;
  Device device_;
  std::shared_ptr<AutogradMeta> meta_;
};

// When on, every newly allocated tensor is filled with NaN bytes (0xFF) so that a kernel that
// forgets to write part of its output is caught by the tests. Off by default.
void set_poison_new_tensors(bool on);
bool poison_new_tensors();

// A tensor's memory as kernels walk it: size-1 dimensions dropped, and each dimension merged into the
// one before it where the two are contiguous with each other, so most views become one or two flat
// loops (both backends' elementwise kernels read operands this way). More than kMaxKernelDims
// dimensions left after merging is an error naming `op`.
constexpr int kMaxKernelDims = 8;
struct KernelLayout {
  int rank = 0;
  std::int64_t shape[kMaxKernelDims] = {};
  std::int64_t strides[kMaxKernelDims] = {};
};
KernelLayout kernel_layout(const Tensor& t, const char* op);

// Inside a sync-free training step nothing may read tensor values on the host: on a GPU every such
// read waits for the device and cannot be captured in a CUDA graph. While a HostReadGuard is alive,
// to_vector, item and copies to the CPU throw an error naming the scope — on every device, so that
// tests on the CPU prove a step would never wait for a GPU. Scoped like NoGradGuard (the engine is
// single-threaded).
class HostReadGuard {
 public:
  explicit HostReadGuard(const char* scope);
  ~HostReadGuard();
  HostReadGuard(const HostReadGuard&) = delete;
  HostReadGuard& operator=(const HostReadGuard&) = delete;

 private:
  const char* previous_;
};
// The innermost live HostReadGuard's scope, or nullptr when host reads are allowed.
const char* host_reads_forbidden_in();

}  // namespace tg
