// CUDA cross-entropy: one block per row (one warp per row for vocabularies up to
// kWarpRowVocab, where a block would leave most threads idle) reads the row once (16-byte loads
// for long rows) with an online log-sum-exp in fp32 (merged in a fixed order), writes the row loss
// and log-sum-exp; a single block then sums the row losses and counts in a fixed order. Backward
// recomputes softmax = exp(x - lse) per element, also with 16-byte loads and stores.
#include "kernels/cuda/cross_entropy.h"

#include "kernels/cuda/ops_common.cuh"

namespace s6::kernels::cuda {

namespace {

using namespace detail;

constexpr int kThreads = 256;
constexpr int64_t kWarpRowVocab = 1024;

// A row is read in 16-byte vectors (8 bf16 or 4 floats per load; scalar loads of 2 bytes kept an
// LM's 1.6 GB of logits far below the copy bandwidth): a scalar head up to the first 16-byte
// boundary, the vector body, a scalar tail. fn(v, x) sees every element once, each thread's in
// increasing order; the thread-to-element mapping depends only on the sizes and the alignment.
template <typename D, typename Fn>
__device__ __forceinline__ void for_row(const D* row, int64_t vocab, Fn&& fn) {
  constexpr int kVec = 16 / sizeof(D);
  const int64_t head_raw = ((16 - (reinterpret_cast<uintptr_t>(row) & 15)) & 15) / sizeof(D);
  const int64_t head = head_raw < vocab ? head_raw : vocab;
  for (int64_t v = threadIdx.x; v < head; v += blockDim.x) fn(v, to_acc(row[v]));
  const int64_t body = (vocab - head) / kVec;
  const uint4* vec = reinterpret_cast<const uint4*>(row + head);
  for (int64_t i = threadIdx.x; i < body; i += blockDim.x) {
    const uint4 raw = vec[i];
    const D* x = reinterpret_cast<const D*>(&raw);
#pragma unroll
    for (int k = 0; k < kVec; ++k) fn(head + i * kVec + k, to_acc(x[k]));
  }
  for (int64_t v = head + body * kVec + threadIdx.x; v < vocab; v += blockDim.x) fn(v, to_acc(row[v]));
}

// Online log-sum-exp: (m, s) stands for s * exp(m). Merging keeps the larger m; an m of -inf
// holds nothing (s = 0), so -inf - -inf never reaches an exp.
struct Lse {
  float m = -INFINITY, s = 0.f;
  __device__ void add(float x) {
    if (x > m) {
      s = (m == -INFINITY ? s : s * __expf(m - x)) + 1.f;  // s is 0 (or NaN) while m is -inf
      m = x;
    } else if (m != -INFINITY) {
      s += __expf(x - m);
    } else if (x != x) {  // NaN poisons the row, as it does the loss
      s = x;
    }
  }
  __device__ void merge(float m2, float s2) {
    if (m2 > m) {
      s = (m == -INFINITY ? s : s * __expf(m - m2)) + s2;
      m = m2;
    } else if (m2 != -INFINITY) {
      s += s2 * __expf(m2 - m);
    } else if (s2 != s2) {
      s = s2;
    }
  }
};

// Block-wide merge in a fixed order (shuffle tree per warp, then warp 0 over the warps).
__device__ Lse block_lse(Lse v, float* scratch_m, float* scratch_s) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    float m2 = __shfl_xor_sync(0xffffffffu, v.m, o), s2 = __shfl_xor_sync(0xffffffffu, v.s, o);
    v.merge(m2, s2);
  }
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, warps = blockDim.x >> 5;
  __syncthreads();  // scratch may still be read by the previous row
  if (lane == 0) {
    scratch_m[warp] = v.m;
    scratch_s[warp] = v.s;
  }
  __syncthreads();
  Lse total;
  for (int w = 0; w < warps; ++w) total.merge(scratch_m[w], scratch_s[w]);
  return total;
}

// Row r's log-sum-exp and loss, from its merged Lse (one thread).
template <typename D> __device__ void finish_row(float* row_loss, float* lse_out, int64_t* err, const D* row,
                                                 int64_t r, int64_t t, const Lse& total, int64_t vocab,
                                                 int64_t ignore_index) {
  const float lse = total.m + logf(total.s);
  lse_out[r] = lse;
  if (t == ignore_index) {
    row_loss[r] = 0.f;
  } else if (t < 0 || t >= vocab) {
    flag_index_error(err, r, t, vocab);
    row_loss[r] = __int_as_float(0x7fc00000);  // NaN: a bad target is never silent
  } else {
    row_loss[r] = lse - to_acc(row[t]);
  }
}

template <typename D, typename I> __global__ void __launch_bounds__(kThreads)
    ce_rows_kernel(float* row_loss, float* lse_out, int64_t* err, const D* logits, const I* targets,
                   int64_t rows, int64_t vocab, int64_t ignore_index) {
  __shared__ float scratch_m[32], scratch_s[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const D* row = logits + r * vocab;
    Lse acc;
    for_row(row, vocab, [&](int64_t, float x) { acc.add(x); });
    const Lse total = block_lse(acc, scratch_m, scratch_s);
    if (threadIdx.x == 0)
      finish_row(row_loss, lse_out, err, row, r, static_cast<int64_t>(targets[r]), total, vocab, ignore_index);
  }
}

// One warp per row (vocab <= kWarpRowVocab): lanes stride over the row, then a shuffle tree.
template <typename D, typename I> __global__ void __launch_bounds__(kThreads)
    ce_rows_warp_kernel(float* row_loss, float* lse_out, int64_t* err, const D* logits, const I* targets,
                        int64_t rows, int64_t vocab, int64_t ignore_index) {
  const int lane = threadIdx.x & 31, per_block = blockDim.x >> 5;
  for (int64_t r = (int64_t)blockIdx.x * per_block + (threadIdx.x >> 5); r < rows;
       r += (int64_t)gridDim.x * per_block) {
    const D* row = logits + r * vocab;
    Lse acc;
    for (int64_t v = lane; v < vocab; v += 32) acc.add(to_acc(row[v]));
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float m2 = __shfl_xor_sync(0xffffffffu, acc.m, o), s2 = __shfl_xor_sync(0xffffffffu, acc.s, o);
      acc.merge(m2, s2);
    }
    if (lane == 0)
      finish_row(row_loss, lse_out, err, row, r, static_cast<int64_t>(targets[r]), acc, vocab, ignore_index);
  }
}

template <typename I> __global__ void ce_total_kernel(float* loss, int32_t* counted, const float* row_loss,
                                                      const I* targets, int64_t rows, int64_t ignore_index) {
  __shared__ float scratch[32];
  __shared__ int iscratch[32];
  float acc = 0.f;
  int n = 0;
  for (int64_t r = threadIdx.x; r < rows; r += blockDim.x) {
    acc += row_loss[r];
    n += static_cast<int64_t>(targets[r]) != ignore_index;
  }
  acc = block_sum(acc, scratch);
  n = block_sum(n, iscratch);
  if (threadIdx.x == 0) {
    counted[0] = n;
    loss[0] = n > 0 ? acc / static_cast<float>(n) : 0.f;
  }
}

template <typename D, typename I> __global__ void __launch_bounds__(kThreads)
    ce_bwd_kernel(D* dlogits, const D* logits, const I* targets, const float* lse, const float* grad_loss,
                  const int32_t* counted, int64_t rows, int64_t vocab, int64_t ignore_index) {
  constexpr int kVec = 16 / sizeof(D);
  const int n = counted[0];
  const float scale = n > 0 ? grad_loss[0] / static_cast<float>(n) : 0.f;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t t = static_cast<int64_t>(targets[r]);
    const bool skip = t == ignore_index || t < 0 || t >= vocab;
    const D* row = logits + r * vocab;
    D* d = dlogits + r * vocab;
    const float l = lse[r];
    auto grad = [&](int64_t v, float x) { return skip ? 0.f : (__expf(x - l) - (v == t ? 1.f : 0.f)) * scale; };
    // Vector loads and stores when the two rows share their alignment (they do for allocations from
    // the caching allocator); element by element otherwise.
    const bool same_phase = ((reinterpret_cast<uintptr_t>(row) ^ reinterpret_cast<uintptr_t>(d)) & 15) == 0;
    const int64_t head_raw = same_phase ? ((16 - (reinterpret_cast<uintptr_t>(row) & 15)) & 15) / sizeof(D)
                                        : vocab;
    const int64_t head = head_raw < vocab ? head_raw : vocab;
    for (int64_t v = threadIdx.x; v < head; v += blockDim.x) store(d + v, grad(v, to_acc(row[v])));
    const int64_t body = (vocab - head) / kVec;
    const uint4* in = reinterpret_cast<const uint4*>(row + head);
    uint4* out = reinterpret_cast<uint4*>(d + head);
    for (int64_t i = threadIdx.x; i < body; i += blockDim.x) {
      const uint4 raw = in[i];
      const D* x = reinterpret_cast<const D*>(&raw);
      uint4 packed;
      D* g = reinterpret_cast<D*>(&packed);
#pragma unroll
      for (int k = 0; k < kVec; ++k) store(g + k, grad(head + i * kVec + k, to_acc(x[k])));
      out[i] = packed;
    }
    for (int64_t v = head + body * kVec + threadIdx.x; v < vocab; v += blockDim.x)
      store(d + v, grad(v, to_acc(row[v])));
  }
}

template <typename D, typename I> __global__ void __launch_bounds__(kThreads)
    ce_bwd_warp_kernel(D* dlogits, const D* logits, const I* targets, const float* lse, const float* grad_loss,
                       const int32_t* counted, int64_t rows, int64_t vocab, int64_t ignore_index) {
  const int n = counted[0];
  const float scale = n > 0 ? grad_loss[0] / static_cast<float>(n) : 0.f;
  const int lane = threadIdx.x & 31, per_block = blockDim.x >> 5;
  for (int64_t r = (int64_t)blockIdx.x * per_block + (threadIdx.x >> 5); r < rows;
       r += (int64_t)gridDim.x * per_block) {
    const int64_t t = static_cast<int64_t>(targets[r]);
    const bool skip = t == ignore_index || t < 0 || t >= vocab;
    const float l = lse[r];
    for (int64_t v = lane; v < vocab; v += 32) {
      const float x = to_acc(logits[r * vocab + v]);
      store(dlogits + r * vocab + v, skip ? 0.f : (__expf(x - l) - (v == t ? 1.f : 0.f)) * scale);
    }
  }
}

unsigned row_blocks(int64_t rows) {
  return static_cast<unsigned>(rows < 65535 * 4 ? (rows > 0 ? rows : 1) : 65535 * 4);
}
// Blocks of kThreads / 32 rows for the warp-per-row kernels.
unsigned warp_row_blocks(int64_t rows) { return row_blocks((rows + kThreads / 32 - 1) / (kThreads / 32)); }

}  // namespace

template <typename T, typename I>
void cross_entropy_fwd(float* loss, int32_t* counted, float* lse, int64_t* error_info, const T* logits,
                       const I* targets, int64_t rows, int64_t vocab, int64_t ignore_index, void* stream) {
  S6_CHECK(rows >= 0 && vocab > 0, "cross_entropy_fwd: bad sizes ({}, {})", rows, vocab);
  S6_CHECK(rows < (1LL << 31), "cross_entropy_fwd: {} rows exceed the int32 count", rows);
  cudaStream_t s = as_stream(stream);
  Scratch row_loss(rows * static_cast<int64_t>(sizeof(float)));
  if (rows > 0 && vocab <= kWarpRowVocab) {
    ce_rows_warp_kernel<<<warp_row_blocks(rows), kThreads, 0, s>>>(
        row_loss.as<float>(), lse, error_info, dev(logits), targets, rows, vocab, ignore_index);
    check_launch("cross_entropy_fwd");
  } else if (rows > 0) {
    ce_rows_kernel<<<row_blocks(rows), kThreads, 0, s>>>(row_loss.as<float>(), lse, error_info, dev(logits),
                                                         targets, rows, vocab, ignore_index);
    check_launch("cross_entropy_fwd");
  }
  ce_total_kernel<<<1, 1024, 0, s>>>(loss, counted, row_loss.as<float>(), targets, rows, ignore_index);
  check_launch("cross_entropy_fwd (total)");
}

template <typename T, typename I> void cross_entropy_bwd(T* dlogits, const T* logits, const I* targets,
                                                         const float* lse, const float* grad_loss,
                                                         const int32_t* counted, int64_t rows, int64_t vocab,
                                                         int64_t ignore_index, void* stream) {
  S6_CHECK(rows >= 0 && vocab > 0, "cross_entropy_bwd: bad sizes ({}, {})", rows, vocab);
  if (rows == 0) return;
  if (vocab <= kWarpRowVocab)
    ce_bwd_warp_kernel<<<warp_row_blocks(rows), kThreads, 0, as_stream(stream)>>>(
        dev(dlogits), dev(logits), targets, lse, grad_loss, counted, rows, vocab, ignore_index);
  else
    ce_bwd_kernel<<<row_blocks(rows), kThreads, 0, as_stream(stream)>>>(
        dev(dlogits), dev(logits), targets, lse, grad_loss, counted, rows, vocab, ignore_index);
  check_launch("cross_entropy_bwd");
}

#define S6_INSTANTIATE(T, I)                                                                                \
  template void cross_entropy_fwd<T, I>(float*, int32_t*, float*, int64_t*, const T*, const I*, int64_t,    \
                                        int64_t, int64_t, void*);                                           \
  template void cross_entropy_bwd<T, I>(T*, const T*, const I*, const float*, const float*, const int32_t*, \
                                        int64_t, int64_t, int64_t, void*);
S6_INSTANTIATE(float, int32_t)
S6_INSTANTIATE(float, int64_t)
S6_INSTANTIATE(BFloat16, int32_t)
S6_INSTANTIATE(BFloat16, int64_t)
#undef S6_INSTANTIATE

}  // namespace s6::kernels::cuda
