// Tensor: a typed, strided view of shared Storage on the CPU or a CUDA device, plus the autograd
// metadata the tape uses (a leaf's requires_grad and .grad, or a recorded output's tape slot).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "core/shape.h"
#include "core/storage.h"

namespace s6 {

class Tensor;

// Per-tensor autograd state. A leaf (parameter) has requires_grad and accumulates into grad; a
// tensor produced by a recorded op has a slot on the tape of the given generation.
struct AutogradMeta {
  bool requires_grad = false;
  std::shared_ptr<Tensor> grad;
  uint64_t tape_generation = 0;
  int64_t slot = -1;
};

// The generation of this thread's tape; a slot from an older generation is stale (detached).
uint64_t current_tape_generation();
void advance_tape_generation();

class Tensor {
 public:
  Tensor() = default;

  static Tensor empty(const Shape& shape, DType dtype = DType::Float32, Device device = Device::CPU);
  static Tensor zeros(const Shape& shape, DType dtype = DType::Float32, Device device = Device::CPU);
  static Tensor full(const Shape& shape, double value, DType dtype = DType::Float32,
                     Device device = Device::CPU);
  template <typename T>
  static Tensor from_vector(const std::vector<T>& values, const Shape& shape, Device device = Device::CPU);
  static Tensor empty_like(const Tensor& t) { return empty(t.shape(), t.dtype(), t.device()); }
  // The parts joined along dim (same dtype, device and sizes elsewhere), in one kernel on CUDA.
  static Tensor concat(const std::vector<Tensor>& parts, int64_t dim);
  static Tensor zeros_like(const Tensor& t) { return zeros(t.shape(), t.dtype(), t.device()); }

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  const Shape& strides() const { return strides_; }
  int64_t dim() const { return static_cast<int64_t>(shape_.size()); }
  int64_t size(int64_t d) const;
  int64_t stride(int64_t d) const;
  int64_t numel() const { return shape_numel(shape_); }
  int64_t offset() const { return offset_; }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  bool is_cuda() const { return device_ == Device::CUDA; }
  bool is_contiguous() const;
  const StoragePtr& storage() const { return storage_; }
  int64_t nbytes() const { return numel() * dtype_size(dtype_); }

  void* data_ptr() const;
  template <typename T> T* data() const {
    S6_CHECK(dtype_of<T>::value == dtype_, "data<{}>() on a {} tensor", dtype_name(dtype_of<T>::value),
             describe());
    return static_cast<T*>(data_ptr());
  }

  // Copies (never recorded on the tape).
  Tensor contiguous() const;  // self if already contiguous
  Tensor clone() const;
  Tensor to(Device device) const;  // self if already there
  Tensor to(DType dtype) const;    // self if already that type
  template <typename T> std::vector<T> to_vector() const;
  double item() const;  // the value of a one-element tensor, as double

  // Views sharing storage (not recorded; layers/ has the differentiable versions).
  Tensor view(Shape shape) const;  // needs a contiguous tensor; one dim may be -1
  Tensor narrow(int64_t dim, int64_t start, int64_t length) const;
  Tensor transpose(int64_t d0, int64_t d1) const;
  Tensor permute(const std::vector<int64_t>& dims) const;
  Tensor expand(const Shape& shape) const;  // broadcast size-1 dims with stride 0

  // In-place (never recorded).
  Tensor& fill_(double value);
  Tensor& zero_();
  Tensor& copy_(const Tensor& src);                       // same shape; converts dtype and device
  Tensor& add_(const Tensor& other, double alpha = 1.0);  // same shape, dtype and device
  // Index of the largest element along the last dimension (int32, same device, last dim dropped):
  // the first maximum on ties; NaNs never win (a row whose first element is NaN gives 0, as a
  // sequential "if (x > best)" scan does). Floating types only; used for accuracy on the device.
  Tensor argmax_last() const;

  // Autograd.
  bool requires_grad() const;  // a leaf that wants grad, or an output recorded on the live tape
  Tensor& requires_grad_(bool value = true);
  bool is_leaf() const;
  Tensor grad() const;  // undefined until backward reaches this leaf
  void set_grad(const Tensor& g);
  Tensor detach() const;  // same data, no autograd history
  const std::shared_ptr<AutogradMeta>& autograd_meta() const { return meta_; }
  AutogradMeta& ensure_autograd_meta();
  void reset_autograd_meta() { meta_.reset(); }

  // "float32[2, 3] cpu" (plus "non-contiguous" where it matters): for error messages.
  std::string describe() const;

 private:
  StoragePtr storage_;
  Shape shape_, strides_;
  int64_t offset_ = 0;  // in elements
  DType dtype_ = DType::Float32;
  Device device_ = Device::CPU;
  std::shared_ptr<AutogradMeta> meta_;
};

}  // namespace s6
