// Tensor construction, views, copies and the autograd bookkeeping that lives on the tensor.
#include "core/tensor.h"

#include <algorithm>
#include <cstring>

#include "core/cuda_runtime.h"
#include "core/tensor_kernels.h"

namespace s6 {

namespace {
thread_local uint64_t g_tape_generation = 1;

detail::StridedShape strided_shape(const Tensor& t) {
  S6_CHECK(t.dim() <= detail::kMaxDims, "tensor rank {} exceeds the supported {} ({})", t.dim(),
           detail::kMaxDims, t.describe());
  detail::StridedShape s{};
  s.ndim = static_cast<int>(t.dim());
  for (int d = 0; d < s.ndim; ++d) s.sizes[d] = t.shape()[d];
  s.numel = t.numel();
  return s;
}

detail::StridedView strided_view(const Tensor& t) {
  detail::StridedView v{};
  v.data = t.data_ptr();
  v.dtype = t.dtype();
  for (int64_t d = 0; d < t.dim(); ++d) v.strides[d] = t.strides()[d];
  return v;
}
}  // namespace

uint64_t current_tape_generation() { return g_tape_generation; }
void advance_tape_generation() { ++g_tape_generation; }

int64_t wrap_dim(int64_t dim, int64_t rank) {
  int64_t d = dim < 0 ? dim + rank : dim;
  S6_CHECK(d >= 0 && d < rank, "dimension {} is out of range for a tensor of rank {}", dim, rank);
  return d;
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  for (int64_t d : shape) S6_CHECK(d >= 0, "empty: negative size in shape {}", shape_str(shape));
  Tensor t;
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  t.dtype_ = dtype;
  t.device_ = device;
  t.storage_ = std::make_shared<Storage>(shape_numel(shape) * dtype_size(dtype), device);
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  return t.zero_();
}

Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  return t.fill_(value);
}

template <typename T>
Tensor Tensor::from_vector(const std::vector<T>& values, const Shape& shape, Device device) {
  S6_CHECK(static_cast<int64_t>(values.size()) == shape_numel(shape),
           "from_vector: {} values do not fill shape {}", values.size(), shape_str(shape));
  Tensor host = empty(shape, dtype_of<T>::value, Device::CPU);
  if (!values.empty()) std::memcpy(host.data_ptr(), values.data(), values.size() * sizeof(T));
  return host.to(device);
}

template Tensor Tensor::from_vector(const std::vector<float>&, const Shape&, Device);
template Tensor Tensor::from_vector(const std::vector<double>&, const Shape&, Device);
template Tensor Tensor::from_vector(const std::vector<int32_t>&, const Shape&, Device);
template Tensor Tensor::from_vector(const std::vector<int64_t>&, const Shape&, Device);
template Tensor Tensor::from_vector(const std::vector<BFloat16>&, const Shape&, Device);

int64_t Tensor::size(int64_t d) const { return shape_[wrap_dim(d, dim())]; }
int64_t Tensor::stride(int64_t d) const { return strides_[wrap_dim(d, dim())]; }

bool Tensor::is_contiguous() const {
  int64_t expected = 1;
  for (size_t i = shape_.size(); i-- > 0;) {
    if (shape_[i] == 1) continue;
    if (strides_[i] != expected) return false;
    expected *= shape_[i];
  }
  return true;
}

void* Tensor::data_ptr() const {
  S6_CHECK(defined(), "data_ptr() of an undefined tensor");
  return static_cast<char*>(storage_->data) + offset_ * dtype_size(dtype_);
}

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  return clone();
}

Tensor Tensor::clone() const {
  Tensor out = empty(shape_, dtype_, device_);
  out.copy_(*this);
  return out;
}

Tensor Tensor::to(Device device) const {
  if (device == device_) return *this;
  Tensor src = contiguous();
  Tensor out = empty(shape_, dtype_, device);
  cuda::copy_bytes(out.data_ptr(), src.data_ptr(), src.nbytes(),
                   device == Device::CUDA ? cuda::CopyKind::HostToDevice : cuda::CopyKind::DeviceToHost);
  return out;
}

Tensor Tensor::to(DType dtype) const {
  if (dtype == dtype_) return *this;
  Tensor out = empty(shape_, dtype, device_);
  out.copy_(*this);
  return out;
}

template <typename T> std::vector<T> Tensor::to_vector() const {
  Tensor host = to(Device::CPU).to(dtype_of<T>::value).contiguous();
  const T* p = host.data<T>();
  return std::vector<T>(p, p + host.numel());
}

template std::vector<float> Tensor::to_vector() const;
template std::vector<double> Tensor::to_vector() const;
template std::vector<int32_t> Tensor::to_vector() const;
template std::vector<int64_t> Tensor::to_vector() const;

double Tensor::item() const {
  S6_CHECK(numel() == 1, "item() needs a one-element tensor, got {}", describe());
  if (dtype_ == DType::Int32 || dtype_ == DType::Int64) return static_cast<double>(to_vector<int64_t>()[0]);
  return to_vector<double>()[0];
}

Tensor Tensor::view(Shape shape) const {
  S6_CHECK(is_contiguous(), "view{} of a non-contiguous {}: call contiguous() first", shape_str(shape),
           describe());
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      S6_CHECK(infer < 0, "view{}: only one dimension may be -1", shape_str(shape));
      infer = static_cast<int64_t>(i);
    } else {
      known *= shape[i];
    }
  }
  if (infer >= 0) {
    S6_CHECK(known > 0 && numel() % known == 0, "view{} cannot hold {}", shape_str(shape), describe());
    shape[infer] = numel() / known;
  }
  S6_CHECK(shape_numel(shape) == numel(), "view{} has {} elements but {} has {}", shape_str(shape),
           shape_numel(shape), describe(), numel());
  Tensor t = detach();
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  return t;
}

Tensor Tensor::narrow(int64_t dim_, int64_t start, int64_t length) const {
  int64_t d = wrap_dim(dim_, dim());
  S6_CHECK(start >= 0 && length >= 0 && start + length <= shape_[d],
           "narrow(dim {}, start {}, length {}) is outside {}", dim_, start, length, describe());
  Tensor t = detach();
  t.shape_[d] = length;
  t.offset_ += start * strides_[d];
  return t;
}

Tensor Tensor::concat(const std::vector<Tensor>& parts_in, int64_t dim_in) {
  S6_CHECK(!parts_in.empty() && parts_in[0].defined(), "concat: needs at least one defined part");
  const Tensor& first = parts_in[0];
  const int64_t d = wrap_dim(dim_in, first.dim());
  Shape shape = first.shape();
  shape[d] = 0;
  for (const Tensor& p : parts_in) {
    S6_CHECK(
        p.defined() && p.dim() == first.dim() && p.dtype() == first.dtype() && p.device() == first.device(),
        "concat: part {} does not match the first part {}", p.defined() ? p.describe() : "undefined",
        first.describe());
    for (int64_t k = 0; k < first.dim(); ++k)
      S6_CHECK(k == d || p.size(k) == first.size(k), "concat: part {} differs from {} outside dim {}",
               p.describe(), first.describe(), dim_in);
    shape[d] += p.size(d);
  }
  Tensor out = empty(shape, first.dtype(), first.device());
  if (parts_in.size() > static_cast<size_t>(detail::kMaxConcatParts)) {
    int64_t at = 0;
    for (const Tensor& p : parts_in) {
      out.narrow(d, at, p.size(d)).copy_(p);
      at += p.size(d);
    }
    return out;
  }
  int64_t outer = 1, inner = 1;
  for (int64_t k = 0; k < d; ++k) outer *= shape[k];
  for (int64_t k = d + 1; k < first.dim(); ++k) inner *= shape[k];
  std::vector<Tensor> parts;  // keeps the contiguous copies alive until the kernel is enqueued
  detail::ConcatParts table{};
  for (const Tensor& p : parts_in) {
    parts.push_back(p.contiguous());
    table.data[table.n] = parts.back().data_ptr();
    table.size[table.n++] = p.size(d);
  }
  const int elem = static_cast<int>(dtype_size(first.dtype()));
  if (first.is_cuda()) detail::concat_cuda(out.data_ptr(), table, elem, outer, shape[d], inner);
  else detail::concat_cpu(out.data_ptr(), table, elem, outer, shape[d], inner);
  return out;
}

Tensor Tensor::transpose(int64_t d0, int64_t d1) const {
  int64_t a = wrap_dim(d0, dim()), b = wrap_dim(d1, dim());
  Tensor t = detach();
  std::swap(t.shape_[a], t.shape_[b]);
  std::swap(t.strides_[a], t.strides_[b]);
  return t;
}

Tensor Tensor::permute(const std::vector<int64_t>& dims) const {
  S6_CHECK(static_cast<int64_t>(dims.size()) == dim(), "permute: {} dims given for {}", dims.size(),
           describe());
  Tensor t = detach();
  std::vector<bool> seen(dims.size(), false);
  for (size_t i = 0; i < dims.size(); ++i) {
    int64_t d = wrap_dim(dims[i], dim());
    S6_CHECK(!seen[d], "permute: dimension {} repeated", d);
    seen[d] = true;
    t.shape_[i] = shape_[d];
    t.strides_[i] = strides_[d];
  }
  return t;
}

Tensor Tensor::expand(const Shape& shape) const {
  S6_CHECK(shape.size() >= shape_.size(), "expand{} has fewer dims than {}", shape_str(shape), describe());
  Tensor t = detach();
  size_t lead = shape.size() - shape_.size();
  t.shape_ = shape;
  t.strides_.assign(shape.size(), 0);
  for (size_t i = 0; i < shape_.size(); ++i) {
    int64_t want = shape[lead + i];
    S6_CHECK(shape_[i] == want || shape_[i] == 1, "expand{}: dim {} of {} is neither 1 nor {}",
             shape_str(shape), i, describe(), want);
    t.strides_[lead + i] = shape_[i] == want ? strides_[i] : 0;
  }
  return t;
}

Tensor& Tensor::fill_(double value) {
  if (numel() == 0) return *this;
  if (device_ == Device::CPU) detail::fill_cpu(strided_shape(*this), strided_view(*this), value);
  else detail::fill_cuda(strided_shape(*this), strided_view(*this), value);
  return *this;
}

Tensor& Tensor::zero_() {
  if (is_contiguous() && numel() > 0) {
    if (device_ == Device::CPU) std::memset(data_ptr(), 0, nbytes());
    else cuda::memset_zero(data_ptr(), nbytes());
    return *this;
  }
  return fill_(0.0);
}

Tensor& Tensor::copy_(const Tensor& src) {
  S6_CHECK(src.shape() == shape_, "copy_: source {} does not match destination {}", src.describe(), describe());
  if (numel() == 0) return *this;
  Tensor s = src.device() == device_ ? src : src.to(device_);
  if (s.dtype() == dtype_ && s.is_contiguous() && is_contiguous()) {
    if (device_ == Device::CPU) std::memcpy(data_ptr(), s.data_ptr(), nbytes());
    else cuda::copy_bytes(data_ptr(), s.data_ptr(), nbytes(), cuda::CopyKind::DeviceToDevice);
    return *this;
  }
  if (device_ == Device::CPU) detail::copy_cpu(strided_shape(*this), strided_view(*this), strided_view(s));
  else detail::copy_cuda(strided_shape(*this), strided_view(*this), strided_view(s));
  return *this;
}

Tensor& Tensor::add_(const Tensor& other, double alpha) {
  S6_CHECK(other.shape() == shape_ && other.dtype() == dtype_ && other.device() == device_,
           "add_: {} cannot be added into {}", other.describe(), describe());
  S6_CHECK(is_contiguous(), "add_: destination {} must be contiguous", describe());
  Tensor o = other.contiguous();
  if (device_ == Device::CPU) detail::add_cpu(data_ptr(), o.data_ptr(), dtype_, numel(), alpha);
  else detail::add_cuda(data_ptr(), o.data_ptr(), dtype_, numel(), alpha);
  return *this;
}

Tensor Tensor::argmax_last() const {
  S6_CHECK(dim() >= 1 && size(-1) >= 1 && size(-1) < (int64_t{1} << 31),
           "argmax_last: needs a last dimension of 1 to 2^31-1 elements; got {}", describe());
  S6_CHECK(dtype_ == DType::Float32 || dtype_ == DType::Float64 || dtype_ == DType::BFloat16,
           "argmax_last: needs a floating tensor; got {}", describe());
  Shape out_shape(shape_.begin(), shape_.end() - 1);
  Tensor out = empty(out_shape, DType::Int32, device_);
  Tensor src = contiguous();
  const int64_t width = size(-1), rows = numel() / width;
  if (device_ == Device::CPU) detail::argmax_rows_cpu(out.data<int32_t>(), src.data_ptr(), dtype_, rows, width);
  else detail::argmax_rows_cuda(out.data<int32_t>(), src.data_ptr(), dtype_, rows, width);
  return out;
}

bool Tensor::requires_grad() const {
  if (!meta_) return false;
  if (meta_->requires_grad) return true;
  return meta_->slot >= 0 && meta_->tape_generation == g_tape_generation;
}

Tensor& Tensor::requires_grad_(bool value) {
  S6_CHECK(!value || is_floating(dtype_), "requires_grad on a {} tensor: only floating types have gradients",
           describe());
  ensure_autograd_meta().requires_grad = value;
  return *this;
}

bool Tensor::is_leaf() const { return !meta_ || meta_->slot < 0; }

Tensor Tensor::grad() const {
  if (!meta_ || !meta_->grad) return Tensor();
  return *meta_->grad;
}

void Tensor::set_grad(const Tensor& g) {
  AutogradMeta& m = ensure_autograd_meta();
  if (!g.defined()) {
    m.grad.reset();
    return;
  }
  S6_CHECK(g.shape() == shape_, "set_grad: gradient {} does not match {}", g.describe(), describe());
  m.grad = std::make_shared<Tensor>(g);
}

Tensor Tensor::detach() const {
  Tensor t = *this;
  t.meta_.reset();
  return t;
}

AutogradMeta& Tensor::ensure_autograd_meta() {
  if (!meta_) meta_ = std::make_shared<AutogradMeta>();
  return *meta_;
}

std::string Tensor::describe() const {
  if (!defined()) return "undefined tensor";
  return fmt::format("{}{} {}{}", dtype_name(dtype_), shape_str(shape_), device_name(device_),
                     is_contiguous() ? "" : " non-contiguous");
}

}  // namespace s6
