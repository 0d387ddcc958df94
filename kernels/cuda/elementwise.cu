// CUDA elementwise maps (unary with derivatives, binary, scale) and the deterministic reductions
// sum_all, sum_rows and sum_to (sum_to_shape). Softplus is linear above 20 like the reference.
#include "kernels/cuda/elementwise.h"

#include <vector>

#include "kernels/cuda/ops_common.cuh"

namespace s6::kernels::cuda {

namespace {

using namespace detail;

template <typename A> __device__ __forceinline__ A exp_(A v) { return exp(v); }
template <> __device__ __forceinline__ float exp_<float>(float v) { return expf(v); }
template <typename A> __device__ __forceinline__ A log1p_(A v) { return log1p(v); }
template <> __device__ __forceinline__ float log1p_<float>(float v) { return log1pf(v); }

template <typename T> __global__ void unary_fwd_kernel(Unary op, T* out, const T* x, int64_t n) {
  using A = decltype(to_acc(x[0]));
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    A v = to_acc(x[i]), r;
    switch (op) {
      case Unary::Exp: r = exp_(v); break;
      case Unary::NegExp: r = -exp_(v); break;
      case Unary::Silu: r = v / (A(1) + exp_(-v)); break;
      default: r = v <= A(20) ? log1p_(exp_(v)) : v; break;
    }
    store(out + i, r);
  }
}

template <typename T> __global__ void unary_bwd_kernel(Unary op, T* dx, const T* dout, const T* x, int64_t n) {
  using A = decltype(to_acc(x[0]));
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    A v = to_acc(x[i]), g = to_acc(dout[i]), r;
    switch (op) {
      case Unary::Exp: r = g * exp_(v); break;
      case Unary::NegExp: r = -g * exp_(v); break;
      case Unary::Silu: {
        A s = A(1) / (A(1) + exp_(-v));
        r = g * s * (A(1) + v * (A(1) - s));
        break;
      }
      default: r = v <= A(20) ? g / (A(1) + exp_(-v)) : g; break;
    }
    store(dx + i, r);
  }
}

template <typename T> __global__ void binary_fwd_kernel(Binary op, T* out, const T* a, const T* b, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    auto u = to_acc(a[i]), v = to_acc(b[i]);
    store(out + i, op == Binary::Add ? u + v : op == Binary::Sub ? u - v : u * v);
  }
}

template <typename T> __global__ void scale_kernel(T* out, const T* x, double factor, int64_t n) {
  using A = decltype(to_acc(x[0]));
  const A f = static_cast<A>(factor);
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    store(out + i, to_acc(x[i]) * f);
}

// General sum_to: one thread per output element walks its reduced index space in a fixed order.
struct SumToDims {
  int kept_rank, red_rank;
  int64_t kept_size[8], kept_stride[8];  // sizes and input strides of the kept dims
  int64_t red_size[8], red_stride[8];
  int64_t out_numel, red_numel;
};

template <typename T> __global__ void sum_to_kernel(T* out, const T* x, SumToDims d) {
  using A = decltype(to_acc(x[0]));
  for (int64_t o = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; o < d.out_numel;
       o += (int64_t)gridDim.x * blockDim.x) {
    int64_t base = 0, rem = o;
    for (int k = d.kept_rank - 1; k >= 0; --k) {
      base += (rem % d.kept_size[k]) * d.kept_stride[k];
      rem /= d.kept_size[k];
    }
    A acc = A(0);
    for (int64_t r = 0; r < d.red_numel; ++r) {
      int64_t off = base, q = r;
      for (int k = d.red_rank - 1; k >= 0; --k) {
        off += (q % d.red_size[k]) * d.red_stride[k];
        q /= d.red_size[k];
      }
      acc += to_acc(x[off]);
    }
    store(out + o, acc);
  }
}

}  // namespace

template <typename T> void unary_fwd(Unary op, T* out, const T* x, int64_t n, void* stream) {
  if (n <= 0) return;
  unary_fwd_kernel<<<blocks_for(n, 256), 256, 0, as_stream(stream)>>>(op, dev(out), dev(x), n);
  check_launch("unary_fwd");
}

template <typename T> void unary_bwd(Unary op, T* dx, const T* dout, const T* x, int64_t n, void* stream) {
  if (n <= 0) return;
  unary_bwd_kernel<<<blocks_for(n, 256), 256, 0, as_stream(stream)>>>(op, dev(dx), dev(dout), dev(x), n);
  check_launch("unary_bwd");
}

template <typename T> void binary_fwd(Binary op, T* out, const T* a, const T* b, int64_t n, void* stream) {
  if (n <= 0) return;
  binary_fwd_kernel<<<blocks_for(n, 256), 256, 0, as_stream(stream)>>>(op, dev(out), dev(a), dev(b), n);
  check_launch("binary_fwd");
}

template <typename T> void scale(T* out, const T* x, double factor, int64_t n, void* stream) {
  if (n <= 0) return;
  scale_kernel<<<blocks_for(n, 256), 256, 0, as_stream(stream)>>>(dev(out), dev(x), factor, n);
  check_launch("scale");
}

template <typename T> void sum_all(T* out, const T* x, int64_t n, void* stream) {
  S6_CHECK(n >= 0, "sum_all: negative size {}", n);
  launch_reduce_all(dev(out), dev(x), n, Identity{}, acc_t<T>(1), as_stream(stream));
  check_launch("sum_all");
}

template <typename T> void sum_rows(T* out, const T* x, int64_t rows, int64_t cols, void* stream) {
  S6_CHECK(rows >= 0 && cols >= 0, "sum_rows: bad sizes ({}, {})", rows, cols);
  launch_colsum(dev(out), dev(x), rows, cols, as_stream(stream));
  check_launch("sum_rows");
}

template <typename T>
void sum_to(T* out, const int64_t* out_shape, const T* x, const int64_t* in_shape, int64_t rank, void* stream) {
  S6_CHECK(rank <= 8, "sum_to: rank {} exceeds 8", rank);
  // Classify dims (dropping size-1 input dims), merging neighbours of the same kind.
  std::vector<int64_t> sizes, strides;
  std::vector<bool> reduced;
  int64_t in_numel = 1, out_numel = 1;
  for (int64_t d = 0; d < rank; ++d) {
    S6_CHECK(out_shape[d] == 1 || out_shape[d] == in_shape[d], "sum_to: dim {} of size {} -> {}", d,
             in_shape[d], out_shape[d]);
    in_numel *= in_shape[d];
    out_numel *= out_shape[d];
  }
  if (out_numel == 0) return;
  int64_t stride = 1;
  std::vector<int64_t> in_strides(static_cast<size_t>(rank));
  for (int64_t d = rank - 1; d >= 0; --d) {
    in_strides[d] = stride;
    stride *= in_shape[d];
  }
  for (int64_t d = 0; d < rank; ++d) {
    if (in_shape[d] == 1) continue;
    bool red = out_shape[d] == 1;
    if (!sizes.empty() && reduced.back() == red && strides.back() == in_strides[d] * in_shape[d]) {
      sizes.back() *= in_shape[d];
      strides.back() = in_strides[d];
    } else {
      sizes.push_back(in_shape[d]);
      strides.push_back(in_strides[d]);
      reduced.push_back(red);
    }
  }
  cudaStream_t s = as_stream(stream);
  bool any_reduced = false;
  for (bool r : reduced) any_reduced |= r;
  if (in_numel == 0 || !any_reduced) {
    if (in_numel == 0) {
      cudaMemsetAsync(out, 0, out_numel * sizeof(T), s);
    } else {
      cudaMemcpyAsync(out, x, out_numel * sizeof(T), cudaMemcpyDeviceToDevice, s);
    }
  } else if (sizes.size() == 1) {
    launch_reduce_all(dev(out), dev(x), sizes[0], Identity{}, acc_t<T>(1), s);
  } else if (sizes.size() == 2 && reduced[0]) {
    launch_colsum(dev(out), dev(x), sizes[0], sizes[1], s);
  } else {
    SumToDims dims{};
    dims.out_numel = out_numel;
    dims.red_numel = 1;
    for (size_t k = 0; k < sizes.size(); ++k) {
      if (reduced[k]) {
        dims.red_size[dims.red_rank] = sizes[k];
        dims.red_stride[dims.red_rank++] = strides[k];
        dims.red_numel *= sizes[k];
      } else {
        dims.kept_size[dims.kept_rank] = sizes[k];
        dims.kept_stride[dims.kept_rank++] = strides[k];
      }
    }
    sum_to_kernel<<<blocks_for(out_numel, 256), 256, 0, s>>>(dev(out), dev(x), dims);
  }
  check_launch("sum_to");
}

#define S6_INSTANTIATE(T)                                                      \
  template void unary_fwd<T>(Unary, T*, const T*, int64_t, void*);             \
  template void unary_bwd<T>(Unary, T*, const T*, const T*, int64_t, void*);   \
  template void binary_fwd<T>(Binary, T*, const T*, const T*, int64_t, void*); \
  template void scale<T>(T*, const T*, double, int64_t, void*);                \
  template void sum_all<T>(T*, const T*, int64_t, void*);                      \
  template void sum_rows<T>(T*, const T*, int64_t, int64_t, void*);            \
  template void sum_to<T>(T*, const int64_t*, const T*, const int64_t*, int64_t, void*);
S6_INSTANTIATE(float)
S6_INSTANTIATE(double)
S6_INSTANTIATE(BFloat16)
#undef S6_INSTANTIATE

}  // namespace s6::kernels::cuda
