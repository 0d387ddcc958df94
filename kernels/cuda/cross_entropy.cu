// CUDA cross-entropy: one block per row computes max and sum of exp in fp32 (block reductions in
// a fixed tree), writes the row loss and log-sum-exp; a single block then sums the row losses and
// counts in a fixed order. Backward recomputes softmax = exp(x - lse) per element.
#include "kernels/cuda/cross_entropy.h"

#include "kernels/cuda/ops_common.cuh"

namespace s6::kernels::cuda {

namespace {

using namespace detail;

constexpr int kThreads = 256;

template <typename D, typename I>
__global__ void ce_rows_kernel(float* row_loss, float* lse_out, int64_t* err, const D* logits,
                               const I* targets, int64_t rows, int64_t vocab,
                               int64_t ignore_index) {
  __shared__ float scratch[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const D* row = logits + r * vocab;
    const int64_t t = static_cast<int64_t>(targets[r]);
    float mx = -INFINITY;
    for (int64_t v = threadIdx.x; v < vocab; v += blockDim.x) mx = fmaxf(mx, to_acc(row[v]));
    mx = block_max(mx, scratch);
    float se = 0.f;
    for (int64_t v = threadIdx.x; v < vocab; v += blockDim.x) se += expf(to_acc(row[v]) - mx);
    se = block_sum(se, scratch);
    const float lse = mx + logf(se);
    if (threadIdx.x == 0) {
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
  }
}

template <typename I>
__global__ void ce_total_kernel(float* loss, int32_t* counted, const float* row_loss, const I* targets,
                                int64_t rows, int64_t ignore_index) {
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

template <typename D, typename I>
__global__ void ce_bwd_kernel(D* dlogits, const D* logits, const I* targets, const float* lse,
                              const float* grad_loss, const int32_t* counted, int64_t rows,
                              int64_t vocab, int64_t ignore_index) {
  const int n = counted[0];
  const float scale = n > 0 ? grad_loss[0] / static_cast<float>(n) : 0.f;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t t = static_cast<int64_t>(targets[r]);
    const bool skip = t == ignore_index || t < 0 || t >= vocab;
    const D* row = logits + r * vocab;
    D* d = dlogits + r * vocab;
    const float l = lse[r];
    for (int64_t v = threadIdx.x; v < vocab; v += blockDim.x) {
      const float g = skip ? 0.f : (expf(to_acc(row[v]) - l) - (v == t ? 1.f : 0.f)) * scale;
      store(d + v, g);
    }
  }
}

unsigned row_blocks(int64_t rows) {
  return static_cast<unsigned>(rows < 65535 * 4 ? (rows > 0 ? rows : 1) : 65535 * 4);
}

}  // namespace

template <typename T, typename I>
void cross_entropy_fwd(float* loss, int32_t* counted, float* lse, int64_t* error_info,
                       const T* logits, const I* targets, int64_t rows, int64_t vocab,
                       int64_t ignore_index, void* stream) {
  S6_CHECK(rows >= 0 && vocab > 0, "cross_entropy_fwd: bad sizes ({}, {})", rows, vocab);
  S6_CHECK(rows < (1LL << 31), "cross_entropy_fwd: {} rows exceed the int32 count", rows);
  cudaStream_t s = as_stream(stream);
  Scratch row_loss(rows * static_cast<int64_t>(sizeof(float)));
  if (rows > 0) {
    ce_rows_kernel<<<row_blocks(rows), kThreads, 0, s>>>(row_loss.as<float>(), lse, error_info,
                                                         dev(logits), targets, rows, vocab,
                                                         ignore_index);
    check_launch("cross_entropy_fwd");
  }
  ce_total_kernel<<<1, 1024, 0, s>>>(loss, counted, row_loss.as<float>(), targets, rows,
                                     ignore_index);
  check_launch("cross_entropy_fwd (total)");
}

template <typename T, typename I>
void cross_entropy_bwd(T* dlogits, const T* logits, const I* targets, const float* lse,
                       const float* grad_loss, const int32_t* counted, int64_t rows, int64_t vocab,
                       int64_t ignore_index, void* stream) {
  S6_CHECK(rows >= 0 && vocab > 0, "cross_entropy_bwd: bad sizes ({}, {})", rows, vocab);
  if (rows == 0) return;
  ce_bwd_kernel<<<row_blocks(rows), kThreads, 0, as_stream(stream)>>>(
      dev(dlogits), dev(logits), targets, lse, grad_loss, counted, rows, vocab, ignore_index);
  check_launch("cross_entropy_bwd");
}

#define S6_INSTANTIATE(T, I)                                                                    \
  template void cross_entropy_fwd<T, I>(float*, int32_t*, float*, int64_t*, const T*, const I*, \
                                        int64_t, int64_t, int64_t, void*);                      \
  template void cross_entropy_bwd<T, I>(T*, const T*, const I*, const float*, const float*,     \
                                        const int32_t*, int64_t, int64_t, int64_t, void*);
S6_INSTANTIATE(float, int32_t)
S6_INSTANTIATE(float, int64_t)
S6_INSTANTIATE(BFloat16, int32_t)
S6_INSTANTIATE(BFloat16, int64_t)
#undef S6_INSTANTIATE

}  // namespace s6::kernels::cuda
