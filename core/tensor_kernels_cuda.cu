// CUDA element loops for core: strided fill/copy (with conversion) and contiguous accumulate.
#include <algorithm>
#include <cmath>

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
template <> __device__ inline double to_double<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename Fn> void dispatch_all(DType t, Fn&& fn) {
  switch (t) {
    case DType::Float32: fn(float{}); break;
    case DType::Float64: fn(double{}); break;
    case DType::BFloat16: fn(__nv_bfloat16{}); break;
    case DType::Int32: fn(int32_t{}); break;
    case DType::Int64: fn(int64_t{}); break;
  }
}

// Element offset of a linear index; Index is uint32_t when every offset fits (cheaper division).
// The loop is unrolled over kMaxDims so every access to the (by-value) shape and strides is a
// static index: a dynamic index would make each thread copy the kernel parameters to local
// memory, which made these loops ~10x slower than the copy bandwidth.
template <typename Index>
__device__ __forceinline__ Index offset_of(Index linear, const StridedShape& s, const StridedView& v) {
  Index off = 0;
#pragma unroll
  for (int d = kMaxDims - 1; d > 0; --d) {
    if (d < s.ndim) {
      const Index size = static_cast<Index>(s.sizes[d]);
      const Index q = linear / size;
      off += (linear - q * size) * static_cast<Index>(v.strides[d]);
      linear = q;
    }
  }
  return s.ndim > 0 ? off + linear * static_cast<Index>(v.strides[0]) : off;
}

template <typename D, typename S> __device__ inline D convert(S v) {
  if constexpr (std::is_same_v<D, S>) return v;
  else return from_double<D>(to_double<S>(v));
}

template <typename T, typename Index>
__global__ void fill_kernel(StridedShape shape, StridedView dst, T value) {
  for (Index i = blockIdx.x * blockDim.x + threadIdx.x; i < static_cast<Index>(shape.numel);
       i += gridDim.x * blockDim.x)
    static_cast<T*>(dst.data)[offset_of<Index>(i, shape, dst)] = value;
}

template <typename D, typename S, typename Index>
__global__ void copy_kernel(StridedShape shape, StridedView dst, StridedView src) {
  for (Index i = blockIdx.x * blockDim.x + threadIdx.x; i < static_cast<Index>(shape.numel);
       i += gridDim.x * blockDim.x) {
    S v = static_cast<const S*>(src.data)[offset_of<Index>(i, shape, src)];
    static_cast<D*>(dst.data)[offset_of<Index>(i, shape, dst)] = convert<D, S>(v);
  }
}

// True when every element offset (and the element count) of these views fits in 32 bits.
bool fits_32_bits(const StridedShape& shape, const StridedView* views, int n) {
  if (shape.numel >= (int64_t{1} << 31)) return false;
  for (int v = 0; v < n; ++v) {
    int64_t reach = 0;
    for (int d = 0; d < shape.ndim; ++d) {
      if (views[v].strides[d] < 0) return false;
      reach += (shape.sizes[d] - 1) * views[v].strides[d];
    }
    if (reach >= (int64_t{1} << 31)) return false;
  }
  return true;
}

template <typename T> __device__ __forceinline__ T add_one(T d, T s, double alpha) {
  return from_double<T>(to_double<T>(d) + alpha * to_double<T>(s));
}

template <typename T> __global__ void add_kernel(T* dst, const T* src, int64_t n, double alpha) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    dst[i] = add_one(dst[i], src[i], alpha);
}

// The same sums 16 bytes at a time (16-byte aligned dst and src; n a multiple of 16 / sizeof(T)):
// one 2-byte load per thread kept the bf16 gradient sums of an LM far below the copy bandwidth.
template <typename T> __global__ void add_vec_kernel(uint4* dst, const uint4* src, int64_t vecs, double alpha) {
  constexpr int kPer = 16 / sizeof(T);
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < vecs;
       i += (int64_t)gridDim.x * blockDim.x) {
    uint4 d = dst[i];
    const uint4 s = src[i];
    T* dv = reinterpret_cast<T*>(&d);
    const T* sv = reinterpret_cast<const T*>(&s);
#pragma unroll
    for (int k = 0; k < kPer; ++k) dv[k] = add_one(dv[k], sv[k], alpha);
    dst[i] = d;
  }
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

// One warp per row: each lane scans its strided share in increasing index order, then the warp
// combines (value, index) pairs keeping the larger value and, on ties, the smaller index. NaNs are
// skipped; a row whose first element is NaN gives 0 (what the CPU's sequential scan gives).
template <typename T>
__global__ void argmax_rows_kernel(int32_t* out, const T* src, int64_t rows, int64_t width) {
  const int lane = threadIdx.x % 32;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
  for (int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x / 32) + threadIdx.x / 32; r < rows;
       r += warps) {
    const T* row = src + r * width;
    double best = -INFINITY;
    int64_t best_i = width;  // none yet
    for (int64_t v = lane; v < width; v += 32) {
      double x = to_double<T>(row[v]);
      if (x > best || (x == best && best_i == width)) {
        best = x;
        best_i = v;
      }
    }
    for (int offset = 16; offset > 0; offset /= 2) {
      double other = __shfl_down_sync(0xffffffffu, best, offset);
      int64_t other_i = __shfl_down_sync(0xffffffffu, best_i, offset);
      if (other_i < width && (best_i == width || other > best || (other == best && other_i < best_i))) {
        best = other;
        best_i = other_i;
      }
    }
    if (lane == 0) {
      bool first_nan = to_double<T>(row[0]) != to_double<T>(row[0]);
      out[r] = static_cast<int32_t>(first_nan || best_i == width ? 0 : best_i);
    }
  }
}

}  // namespace

void argmax_rows_cuda(int32_t* out, const void* src, DType dtype, int64_t rows, int64_t width) {
  if (rows == 0) return;
  const int64_t blocks = std::min<int64_t>((rows + 7) / 8, 65535 * 8);
  dispatch_all(dtype, [&](auto tag) {
    using T = decltype(tag);
    argmax_rows_kernel<T>
        <<<static_cast<unsigned>(blocks), 256, 0, stream()>>>(out, static_cast<const T*>(src), rows, width);
  });
  check_launch("argmax_last");
}

void fill_cuda(const StridedShape& shape_in, const StridedView& dst_in, double value) {
  if (shape_in.numel == 0) return;
  StridedShape shape = shape_in;
  StridedView dst = dst_in;
  coalesce_dims(shape, &dst, 1);
  const bool small = fits_32_bits(shape, &dst, 1);
  dispatch_all(dst.dtype, [&](auto tag) {
    using T = decltype(tag);
    T v;
    if constexpr (std::is_same_v<T, __nv_bfloat16>) v = __float2bfloat16(static_cast<float>(value));
    else v = static_cast<T>(value);
    if (small) fill_kernel<T, uint32_t><<<grid_for(shape.numel), 256, 0, stream()>>>(shape, dst, v);
    else fill_kernel<T, int64_t><<<grid_for(shape.numel), 256, 0, stream()>>>(shape, dst, v);
  });
  check_launch("fill");
}

void copy_cuda(const StridedShape& shape_in, const StridedView& dst_in, const StridedView& src_in) {
  if (shape_in.numel == 0) return;
  StridedShape shape = shape_in;
  StridedView views[2] = {dst_in, src_in};
  coalesce_dims(shape, views, 2);
  const StridedView &dst = views[0], &src = views[1];
  if (dst.dtype == src.dtype &&
      (shape.ndim == 0 || (shape.ndim == 1 && dst.strides[0] == 1 && src.strides[0] == 1))) {
    const cudaError_t err = cudaMemcpyAsync(dst.data, src.data, shape.numel * dtype_size(dst.dtype),
                                            cudaMemcpyDeviceToDevice, stream());
    S6_CHECK(err == cudaSuccess, "copy: cudaMemcpyAsync failed: {}", cudaGetErrorString(err));
    return;
  }
  const bool small = fits_32_bits(shape, views, 2);
  dispatch_all(dst.dtype, [&](auto dtag) {
    dispatch_all(src.dtype, [&](auto stag) {
      using D = decltype(dtag);
      using S = decltype(stag);
      if (small) copy_kernel<D, S, uint32_t><<<grid_for(shape.numel), 256, 0, stream()>>>(shape, dst, src);
      else copy_kernel<D, S, int64_t><<<grid_for(shape.numel), 256, 0, stream()>>>(shape, dst, src);
    });
  });
  check_launch("copy");
}

void add_cuda(void* dst, const void* src, DType dtype, int64_t n, double alpha) {
  if (n == 0) return;
  dispatch_all(dtype, [&](auto tag) {
    using T = decltype(tag);
    constexpr int64_t kPer = 16 / sizeof(T);
    const bool vec = n % kPer == 0 && reinterpret_cast<uintptr_t>(dst) % 16 == 0 &&
                     reinterpret_cast<uintptr_t>(src) % 16 == 0;
    if (vec)
      add_vec_kernel<T><<<grid_for(n / kPer), 256, 0, stream()>>>(
          static_cast<uint4*>(dst), static_cast<const uint4*>(src), n / kPer, alpha);
    else
      add_kernel<T>
          <<<grid_for(n), 256, 0, stream()>>>(static_cast<T*>(dst), static_cast<const T*>(src), n, alpha);
  });
  check_launch("add_");
}

namespace {
// One thread per destination element; the part is found by its offset along the joined dimension.
template <typename W>
__global__ void concat_kernel(W* dst, ConcatParts parts, int64_t outer, int64_t total, int64_t inner) {
  const int64_t n = outer * total * inner;
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n;
       e += (int64_t)gridDim.x * blockDim.x) {
    const int64_t i = e % inner, j = (e / inner) % total, o = e / (inner * total);
    int k = 0;
    int64_t start = 0;
    while (k + 1 < parts.n && j >= start + parts.size[k]) start += parts.size[k++];
    dst[e] = static_cast<const W*>(parts.data[k])[(o * parts.size[k] + (j - start)) * inner + i];
  }
}
}  // namespace

void concat_cuda(void* dst, const ConcatParts& parts, int elem_bytes, int64_t outer, int64_t total,
                 int64_t inner) {
  const int64_t n = outer * total * inner;
  if (n == 0) return;
  auto launch = [&](auto tag) {
    using W = decltype(tag);
    concat_kernel<W><<<grid_for(n), 256, 0, stream()>>>(static_cast<W*>(dst), parts, outer, total, inner);
  };
  if (elem_bytes == 1) launch(uint8_t{});
  else if (elem_bytes == 2) launch(uint16_t{});
  else if (elem_bytes == 4) launch(uint32_t{});
  else launch(uint64_t{});
  check_launch("concat");
}

}  // namespace s6::detail
