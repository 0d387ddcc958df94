// CUDA element loops for core: strided fill/copy (with conversion) and contiguous accumulate.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "core/cuda_runtime.h"
#include "core/error.h"
#include "core/tensor_kernels.h"

namespace s6::detail {

namespace {

template <typename T> struct DeviceType { using type = T; };
template <> struct DeviceType<BFloat16> { using type = __nv_bfloat16; };

template <typename T> __device__ inline T from_double(double v) { return static_cast<T>(v); }
template <> __device__ inline __nv_bfloat16 from_double<__nv_bfloat16>(double v) {
  return __float2bfloat16(static_cast<float>(v));
}
template <typename T> __device__ inline double to_double(T v) { return static_cast<double>(v); }
template <> __device__ inline double to_double<__nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}

template <typename Fn>
void dispatch_all(DType t, Fn&& fn) {
  switch (t) {
    case DType::Float32: fn(float{}); break;
    case DType::Float64: fn(double{}); break;
    case DType::BFloat16: fn(__nv_bfloat16{}); break;
    case DType::Int32: fn(int32_t{}); break;
    case DType::Int64: fn(int64_t{}); break;
  }
}

__device__ inline int64_t offset_of(int64_t linear, const StridedShape& s, const int64_t* strides) {
  int64_t off = 0;
  for (int d = s.ndim - 1; d >= 0; --d) {
    int64_t i = linear % s.sizes[d];
    linear /= s.sizes[d];
    off += i * strides[d];
  }
  return off;
}

template <typename T>
__global__ void fill_kernel(StridedShape shape, StridedView dst, T value) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < shape.numel;
       i += (int64_t)gridDim.x * blockDim.x)
    static_cast<T*>(dst.data)[offset_of(i, shape, dst.strides)] = value;
}

template <typename D, typename S>
__global__ void copy_kernel(StridedShape shape, StridedView dst, StridedView src) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < shape.numel;
       i += (int64_t)gridDim.x * blockDim.x) {
    S v = static_cast<const S*>(src.data)[offset_of(i, shape, src.strides)];
    static_cast<D*>(dst.data)[offset_of(i, shape, dst.strides)] = from_double<D>(to_double<S>(v));
  }
}

template <typename T>
__global__ void add_kernel(T* dst, const T* src, int64_t n, double alpha) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x)
    dst[i] = from_double<T>(to_double<T>(dst[i]) + alpha * to_double<T>(src[i]));
}

unsigned grid_for(int64_t n) {
  int64_t blocks = (n + 255) / 256;
  return static_cast<unsigned>(blocks < 65535 * 8 ? (blocks > 0 ? blocks : 1) : 65535 * 8);
}

void check_launch(const char* what) {
  cudaError_t err = cudaGetLastError();
  S6_CHECK(err == cudaSuccess, "{}: kernel launch failed: {}", what, cudaGetErrorString(err));
}

cudaStream_t stream() { return static_cast<cudaStream_t>(cuda::current_stream()); }

}  // namespace

void fill_cuda(const StridedShape& shape, const StridedView& dst, double value) {
  if (shape.numel == 0) return;
  dispatch_all(dst.dtype, [&](auto tag) {
    using T = decltype(tag);
    T v;
    if constexpr (std::is_same_v<T, __nv_bfloat16>) v = __float2bfloat16(static_cast<float>(value));
    else v = static_cast<T>(value);
    fill_kernel<T><<<grid_for(shape.numel), 256, 0, stream()>>>(shape, dst, v);
  });
  check_launch("fill");
}

void copy_cuda(const StridedShape& shape, const StridedView& dst, const StridedView& src) {
  if (shape.numel == 0) return;
  dispatch_all(dst.dtype, [&](auto dtag) {
    dispatch_all(src.dtype, [&](auto stag) {
      copy_kernel<decltype(dtag), decltype(stag)>
          <<<grid_for(shape.numel), 256, 0, stream()>>>(shape, dst, src);
    });
  });
  check_launch("copy");
}

void add_cuda(void* dst, const void* src, DType dtype, int64_t n, double alpha) {
  if (n == 0) return;
  dispatch_all(dtype, [&](auto tag) {
    using T = decltype(tag);
    add_kernel<T><<<grid_for(n), 256, 0, stream()>>>(static_cast<T*>(dst), static_cast<const T*>(src),
                                                     n, alpha);
  });
  check_launch("add_");
}

}  // namespace s6::detail
