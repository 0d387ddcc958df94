// Device helpers shared by the op kernels in kernels/cuda/ (not the scan): dtype mapping and
// fp32 load/store, deterministic block reductions, launch checks, stream-ordered scratch.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "core/cuda_runtime.h"
#include "core/dtype.h"
#include "core/error.h"

namespace s6::kernels::cuda::detail {

// Host type -> device type (s6::BFloat16 and __nv_bfloat16 share one 16-bit layout).
template <typename T> struct Dev { using type = T; };
template <> struct Dev<BFloat16> { using type = __nv_bfloat16; };
template <typename T> using dev_t = typename Dev<T>::type;

template <typename T> inline dev_t<T>* dev(T* p) { return reinterpret_cast<dev_t<T>*>(p); }
template <typename T> inline const dev_t<T>* dev(const T* p) { return reinterpret_cast<const dev_t<T>*>(p); }

// Arithmetic type: fp32 for fp32 and bf16 storage, fp64 for fp64.
template <typename T> struct AccOf { using type = float; };
template <> struct AccOf<double> { using type = double; };
template <typename T> using acc_t = typename AccOf<T>::type;

__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }

__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(double* p, double v) { *p = v; }
__device__ __forceinline__ void store(__nv_bfloat16* p, float v) { *p = __float2bfloat16(v); }
// v as store() would round it into a T (and to_acc read it back).
template <typename T> __device__ __forceinline__ float rounded(float v) { return v; }
template <> __device__ __forceinline__ float rounded<__nv_bfloat16>(float v) {
  return __bfloat162float(__float2bfloat16(v));
}

__device__ __forceinline__ float sigmoidf_(float v) { return 1.f / (1.f + __expf(-v)); }

// Sum over a block in a fixed tree order (deterministic). blockDim.x must be a multiple of 32,
// at most 1024; `scratch` holds 32 values. Every thread gets the total.
template <typename A> __device__ A block_sum(A v, A* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  A t = lane < warps ? scratch[lane] : A(0);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) t += __shfl_xor_sync(0xffffffffu, t, o);
  return t;
}

template <typename A> __device__ A block_max(A v, A* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, o));
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  A t = lane < warps ? scratch[lane] : A(-INFINITY);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) t = max(t, __shfl_xor_sync(0xffffffffu, t, o));
  return t;
}

inline cudaStream_t as_stream(void* s) { return static_cast<cudaStream_t>(s); }

inline void check_launch(const char* what) {
  cudaError_t err = cudaGetLastError();
  S6_CHECK(err == cudaSuccess, "{}: kernel launch failed: {}", what, cudaGetErrorString(err));
}

inline unsigned blocks_for(int64_t n, int threads, int64_t cap = 65535LL * 16) {
  int64_t b = (n + threads - 1) / threads;
  if (b < 1) b = 1;
  return static_cast<unsigned>(b < cap ? b : cap);
}

// Scratch from the caching allocator, handed back when it goes out of scope. Safe while kernels
// still use it: every s6 kernel runs on the current stream, and the allocator reuses blocks in
// stream order.
struct Scratch {
  void* ptr = nullptr;
  explicit Scratch(int64_t bytes) {
    if (bytes > 0) ptr = s6::cuda::allocate(bytes);
  }
  ~Scratch() {
    if (ptr) s6::cuda::release(ptr);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  template <typename U> U* as() const { return static_cast<U*>(ptr); }
};

}  // namespace s6::kernels::cuda::detail

namespace s6::kernels::cuda::detail {

// ---- Deterministic two-pass reductions (fixed grids that depend only on the sizes) ------------

// Pass 1 of a full reduction: block g sums f(x[i]) for i = g*256 + tid + k*grid*256.
struct Identity {
  template <typename A> __device__ A operator()(A v) const { return v; }
};
struct Square {
  template <typename A> __device__ A operator()(A v) const { return v * v; }
};

constexpr int kReduceThreads = 256;
constexpr int kReduceMaxBlocks = 1024;

inline int reduce_blocks(int64_t n) {
  int64_t b = (n + kReduceThreads * 8 - 1) / (kReduceThreads * 8);
  if (b < 1) b = 1;
  return static_cast<int>(b < kReduceMaxBlocks ? b : kReduceMaxBlocks);
}

template <typename T, typename A, typename F>
__global__ void reduce_partial_kernel(A* partial, const T* x, int64_t n, F f) {
  __shared__ A scratch[32];
  A acc = A(0);
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    acc += f(static_cast<A>(to_acc(x[i])));
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

// Pass 2: one block of 1024 threads sums the (at most 1024) partials; out[0] = total * factor.
template <typename O, typename A>
__global__ void reduce_final_kernel(O* out, const A* partial, int count, A factor) {
  __shared__ A scratch[32];
  A v = static_cast<int>(threadIdx.x) < count ? partial[threadIdx.x] : A(0);
  v = block_sum(v, scratch);
  if (threadIdx.x == 0) store(out, v * factor);
}

// out[0] = factor * sum f(x); out has the storage type O (device pointer).
template <typename T, typename O, typename F>
void launch_reduce_all(O* out, const T* x, int64_t n, F f, acc_t<T> factor, cudaStream_t stream) {
  using A = acc_t<T>;
  int blocks = reduce_blocks(n);
  Scratch partial(blocks * static_cast<int64_t>(sizeof(A)));
  reduce_partial_kernel<<<blocks, kReduceThreads, 0, stream>>>(partial.as<A>(), x, n, f);
  reduce_final_kernel<<<1, 1024, 0, stream>>>(out, partial.as<A>(), blocks, factor);
}

// Column sums of a row-major (rows, cols) matrix. Pass 1: block (32 columns, 8 row lanes) sums a
// chunk of rows into partial[chunk][col]; pass 2 sums the chunks of each column in order.
template <typename T, typename A> __global__ void colsum_partial_kernel(A* partial, const T* x, int64_t rows,
                                                                        int64_t cols, int64_t rows_per_chunk) {
  __shared__ A tile[8][33];
  const int64_t c = blockIdx.x * 32LL + threadIdx.x;
  const int64_t r0 = blockIdx.y * rows_per_chunk;
  int64_t r1 = r0 + rows_per_chunk;
  if (r1 > rows) r1 = rows;
  A acc = A(0);
  if (c < cols)
    for (int64_t r = r0 + threadIdx.y; r < r1; r += 8) acc += static_cast<A>(to_acc(x[r * cols + c]));
  tile[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && c < cols) {
    A s = tile[0][threadIdx.x];
#pragma unroll
    for (int k = 1; k < 8; ++k) s += tile[k][threadIdx.x];
    partial[blockIdx.y * cols + c] = s;
  }
}

template <typename O, typename A>
__global__ void colsum_final_kernel(O* out, const A* partial, int64_t chunks, int64_t cols) {
  for (int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; c < cols;
       c += (int64_t)gridDim.x * blockDim.x) {
    A s = A(0);
    for (int64_t g = 0; g < chunks; ++g) s += partial[g * cols + c];
    store(out + c, s);
  }
}

// out[c] = sum_r x[r, c], deterministic. out has storage type O.
template <typename T, typename O>
void launch_colsum(O* out, const T* x, int64_t rows, int64_t cols, cudaStream_t stream) {
  using A = acc_t<T>;
  if (cols == 0) return;
  int64_t chunks = (rows + 63) / 64;
  if (chunks > 256) chunks = 256;
  if (chunks < 1) chunks = 1;
  int64_t per = (rows + chunks - 1) / chunks;
  if (per < 1) per = 1;
  chunks = rows > 0 ? (rows + per - 1) / per : 1;
  Scratch partial(chunks * cols * static_cast<int64_t>(sizeof(A)));
  dim3 grid(static_cast<unsigned>((cols + 31) / 32), static_cast<unsigned>(chunks));
  colsum_partial_kernel<<<grid, dim3(32, 8), 0, stream>>>(partial.as<A>(), x, rows, cols, per);
  colsum_final_kernel<<<blocks_for(cols, 256), 256, 0, stream>>>(out, partial.as<A>(), chunks, cols);
}

}  // namespace s6::kernels::cuda::detail

namespace s6::kernels::cuda::detail {

// Records the first bad index seen: err (device int64[4]) = {1, position, value, bound}.
__device__ __forceinline__ void flag_index_error(int64_t* err, int64_t position, int64_t value, int64_t bound) {
  if (!err) return;
  if (atomicCAS(reinterpret_cast<unsigned long long*>(err), 0ull, 1ull) == 0ull) {
    err[1] = position;
    err[2] = value;
    err[3] = bound;
  }
}

}  // namespace s6::kernels::cuda::detail
