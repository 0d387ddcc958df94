// Argument checks and dtype dispatch shared by the op implementations in layers/.
#pragma once
#include <initializer_list>

#include "core/tensor.h"

namespace s6::detail {

// All defined tensors on one device, with one floating dtype (float32 or float64 on the CPU).
void check_same_float(const char* op, std::initializer_list<const Tensor*> tensors);
void check_shape(const char* op, const char* arg, const Tensor& t, const Shape& expected);
void check_rank(const char* op, const char* arg, const Tensor& t, int64_t rank);
// Ops whose CUDA kernels have not landed yet say so by name.
void check_cpu(const char* op, const Tensor& t);

// bfloat16 on the CPU: the CPU kernels compute in float32/float64, so a fused op given bf16 CPU
// tensors widens them to float32 (a differentiable cast), runs its float32 body and rounds the
// result back with to_dtype. That is what the CUDA kernels do (read bf16, compute in fp32, store
// bf16 results and bf16 input gradients), so the CPU stays the oracle for mixed precision.
bool any_cpu_bf16(std::initializer_list<const Tensor*> tensors);
// to_dtype(t, Float32) for a bf16 tensor; t itself otherwise (undefined stays undefined).
Tensor widen_bf16(const Tensor& t);

// The distance in elements between consecutive rows of t seen as (rows, t.size(-1)) when its last
// dimension is contiguous and every leading dimension steps by whole rows (a column block of a
// wider matrix, such as a part of split(), or any contiguous tensor); 0 otherwise. Kernels that
// take a row stride read such a tensor in place.
int64_t uniform_row_stride(const Tensor& t);

// Calls fn(float{}) or fn(double{}) for a float32/float64 tensor; anything else is an error.
template <typename Fn> void dispatch_float(const char* op, DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::Float32: fn(float{}); return;
    case DType::Float64: fn(double{}); return;
    default: S6_FAIL("{}: the CPU kernel supports float32 and float64, not {}", op, dtype_name(dtype));
  }
}

template <typename T> const T* ptr_or_null(const Tensor& t) { return t.defined() ? t.data<T>() : nullptr; }

// For outputs that may be absent (a gradient nobody asked for).
template <typename T> T* mut_or_null(const Tensor& t) { return t.defined() ? t.data<T>() : nullptr; }

// CUDA kernels: fn(float{}) or fn(BFloat16{}); float64 and others are an error naming the op.
template <typename Fn> void dispatch_cuda(const char* op, DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::Float32: fn(float{}); return;
    case DType::BFloat16: fn(BFloat16{}); return;
    default: S6_FAIL("{}: the CUDA kernel supports float32 and bfloat16, not {}", op, dtype_name(dtype));
  }
}

// Elementwise CUDA kernels also take float64.
template <typename Fn> void dispatch_cuda_elementwise(const char* op, DType dtype, Fn&& fn) {
  if (dtype == DType::Float64) {
    fn(double{});
    return;
  }
  dispatch_cuda(op, dtype, fn);
}

// Ids on a CUDA device are validated by the kernels themselves (no copy to the host per call):
// a bad id or target is recorded in this thread's device buffer (int64[4] = {1, position, value,
// bound}) and poisons its output with NaN. check_cuda_index_errors() reads that buffer (it
// synchronises the stream), resets it and throws a message naming the id, position and bound; call it
// where the host waits anyway (e.g. when the loss is read); outside layers/ through
// s6::check_index_errors (layers/ops.h). One buffer per thread: a thread drives one device.
int64_t* cuda_index_error_buffer();
void check_cuda_index_errors();

}  // namespace s6::detail

namespace s6::detail {

// Calls fn(int32_t{}) or fn(int64_t{}) for an index tensor; anything else is an error.
template <typename Fn> void dispatch_index(const char* op, const Tensor& ids, Fn&& fn) {
  switch (ids.dtype()) {
    case DType::Int32: fn(int32_t{}); return;
    case DType::Int64: fn(int64_t{}); return;
    default: S6_FAIL("{}: indices must be int32 or int64, got {}", op, ids.describe());
  }
}

}  // namespace s6::detail
