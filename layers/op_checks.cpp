// Implementation of the shared argument checks: every message names the op and the tensors.
#include "layers/op_checks.h"

#include "core/cuda_runtime.h"
#include "layers/ops.h"

namespace s6::detail {

void check_same_float(const char* op, std::initializer_list<const Tensor*> tensors) {
  const Tensor* first = nullptr;
  for (const Tensor* t : tensors) {
    if (!t || !t->defined()) continue;
    S6_CHECK(is_floating(t->dtype()), "{}: expected a floating tensor, got {}", op, t->describe());
    if (!first) {
      first = t;
      continue;
    }
    S6_CHECK(t->dtype() == first->dtype() && t->device() == first->device(), "{}: inputs disagree: {} vs {}",
             op, first->describe(), t->describe());
  }
}

void check_shape(const char* op, const char* arg, const Tensor& t, const Shape& expected) {
  S6_CHECK(t.shape() == expected, "{}: {} should be {} but is {}", op, arg, shape_str(expected), t.describe());
}

void check_rank(const char* op, const char* arg, const Tensor& t, int64_t rank) {
  S6_CHECK(t.defined(), "{}: {} is undefined", op, arg);
  S6_CHECK(t.dim() == rank, "{}: {} should have rank {} but is {}", op, arg, rank, t.describe());
}

int64_t* cuda_index_error_buffer() {
  thread_local Tensor buffer;
  if (!buffer.defined()) buffer = Tensor::zeros({4}, DType::Int64, Device::CUDA);
  return buffer.data<int64_t>();
}

void check_cuda_index_errors() {
  int64_t* dev = cuda_index_error_buffer();
  int64_t host[4] = {0, 0, 0, 0};
  cuda::copy_bytes(host, dev, sizeof(host), cuda::CopyKind::DeviceToHost);
  if (host[0] == 0) return;
  cuda::memset_zero(dev, sizeof(host));
  S6_FAIL(
      "embedding/cross_entropy (CUDA): id {} at position {} is outside [0, {}) (and is not the "
      "ignore index)",
      host[2], host[1], host[3]);
}

}  // namespace s6::detail

namespace s6 {
void check_index_errors(Device device) {
  if (device == Device::CUDA) detail::check_cuda_index_errors();
}
}  // namespace s6

namespace s6::detail {

void check_cpu(const char* op, const Tensor& t) {
  S6_CHECK(t.device() == Device::CPU, "{}: no CUDA kernel for {} yet (CPU only)", op, t.describe());
}

bool any_cpu_bf16(std::initializer_list<const Tensor*> tensors) {
  for (const Tensor* t : tensors)
    if (t && t->defined() && t->dtype() == DType::BFloat16 && !t->is_cuda()) return true;
  return false;
}

Tensor widen_bf16(const Tensor& t) {
  return t.defined() && t.dtype() == DType::BFloat16 ? to_dtype(t, DType::Float32) : t;
}

int64_t uniform_row_stride(const Tensor& t) {
  if (!t.defined() || t.dim() < 2 || t.stride(-1) != 1 || t.stride(-2) < t.size(-1)) return 0;
  for (int64_t d = t.dim() - 3; d >= 0; --d)
    if (t.stride(d) != t.size(d + 1) * t.stride(d + 1)) return 0;
  return t.stride(-2);
}

}  // namespace s6::detail
