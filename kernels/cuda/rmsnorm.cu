// CUDA fused add + RMSNorm. Forward: a warp per row up to width 1024, else a block per row.
// X is the activations' type (x, y, dy, the gradient for x), R the residual stream's (residual, s,
// weight, ds); both are float or bf16, or bf16 over a float residual stream under mixed precision.
// Backward: each block owns a fixed range of rows; widths up to 1024 give each warp its own rows (a row's sums
// are warp shuffles, no block barrier per row: narrow rows were latency-bound), wider rows a whole block per
// row. Each block writes one dweight partial row; a second pass sums the partial rows in order (deterministic).
#include "kernels/cuda/rmsnorm.h"

#include "kernels/cuda/ops_common.cuh"

namespace s6::kernels::cuda {

namespace {

using namespace detail;

int threads_for(int64_t width) {
  int64_t t = (width + 31) / 32 * 32;
  return static_cast<int>(t < 32 ? 32 : (t > 256 ? 256 : t));
}

template <typename X, typename R> __global__ void rmsnorm_fwd_kernel(X* y, R* s, const X* x, const R* residual,
                                                                     const R* weight, int64_t rows,
                                                                     int64_t width, float eps) {
  __shared__ float scratch[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t base = r * width;
    float ss = 0.f;
    for (int64_t j = threadIdx.x; j < width; j += blockDim.x) {
      float v = to_acc(x[base + j]);
      if (residual) v += to_acc(residual[base + j]);
      store(s + base + j, v);
      const float vs = to_acc(s[base + j]);  // the stored (possibly rounded) value
      ss += vs * vs;
    }
    ss = block_sum(ss, scratch);
    const float rstd = rsqrtf(ss / static_cast<float>(width) + eps);
    for (int64_t j = threadIdx.x; j < width; j += blockDim.x)
      store(y + base + j, to_acc(s[base + j]) * rstd * to_acc(weight[j]));
  }
}

template <typename X, typename R> __global__ void rmsnorm_bwd_kernel(R* ds, X* dsx, float* partial, const X* dy,
                                                                     const R* dres, const R* s, const R* weight,
                                                                     int64_t rows, int64_t width, float eps,
                                                                     int64_t rows_per_block) {
  __shared__ float scratch[32];
  const int64_t r0 = blockIdx.x * rows_per_block;
  const int64_t r1 = r0 + rows_per_block < rows ? r0 + rows_per_block : rows;
  float* prow = partial ? partial + blockIdx.x * width : nullptr;
  if (prow)
    for (int64_t j = threadIdx.x; j < width; j += blockDim.x) prow[j] = 0.f;
  const float inv_w = 1.f / static_cast<float>(width);
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t base = r * width;
    float ss = 0.f, c = 0.f;
    for (int64_t j = threadIdx.x; j < width; j += blockDim.x) {
      const float v = to_acc(s[base + j]);
      ss += v * v;
      c += v * to_acc(weight[j]) * to_acc(dy[base + j]);
    }
    ss = block_sum(ss, scratch);
    c = block_sum(c, scratch);
    const float rstd = rsqrtf(ss * inv_w + eps);
    c = c * rstd * inv_w;  // mean(xhat * w * dy)
    for (int64_t j = threadIdx.x; j < width; j += blockDim.x) {
      const float g = to_acc(dy[base + j]);
      const float xhat = to_acc(s[base + j]) * rstd;
      if (prow) prow[j] += g * xhat;
      if (ds || dsx) {
        float v = (to_acc(weight[j]) * g - xhat * c) * rstd;
        if (dres) v += to_acc(dres[base + j]);
        if (ds) store(ds + base + j, v);
        if (dsx) store(dsx + base + j, v);
      }
    }
  }
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

constexpr int kWarpRowThreads = 256;  // 8 warps, each walking its own rows

// Lane l of a warp owns columns l, l+32, ... (VPT of them); the warps' dweight sums are combined in
// warp order through shared memory at the end. Every load of a row is issued before its stores
// (the compiler may not move a load above a store that could alias it: a load per column after
// the previous column's stores waited on DRAM 24 times per row). The weight sits in shared memory
// (fewer registers: 2 blocks per SM up to width 512).
template <int VPT, typename X, typename R> __global__ void __launch_bounds__(kWarpRowThreads, VPT <= 16 ? 2 : 1)
    rmsnorm_bwd_warp_kernel(R* ds, X* dsx, float* partial, const X* dy, const R* dres, const R* s,
                            const R* weight, int64_t rows, int64_t width, float eps, int64_t rows_per_block) {
  constexpr int kWarps = kWarpRowThreads / 32;
  extern __shared__ float smem[];
  float* s_w = smem;              // [width]
  float* warp_dw = smem + width;  // [kWarps][width], when partial
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t r0 = blockIdx.x * rows_per_block;
  const int64_t r1 = r0 + rows_per_block < rows ? r0 + rows_per_block : rows;
  const float inv_w = 1.f / static_cast<float>(width);
  for (int64_t j = threadIdx.x; j < width; j += kWarpRowThreads) s_w[j] = to_acc(weight[j]);
  __syncthreads();
  float dw[VPT];
#pragma unroll
  for (int k = 0; k < VPT; ++k) dw[k] = 0.f;
  for (int64_t r = r0 + warp; r < r1; r += kWarps) {
    const int64_t base = r * width;
    float sv[VPT], g[VPT], dr[VPT];
    float ss = 0.f, c = 0.f;
#pragma unroll
    for (int k = 0; k < VPT; ++k) {
      const int64_t j = lane + 32 * k;
      const bool in = j < width;
      sv[k] = in ? to_acc(s[base + j]) : 0.f;
      g[k] = in ? to_acc(dy[base + j]) : 0.f;
      dr[k] = in && dres ? to_acc(dres[base + j]) : 0.f;
      ss += sv[k] * sv[k];
      c += sv[k] * (in ? s_w[j] : 0.f) * g[k];
    }
    ss = warp_sum(ss);
    c = warp_sum(c);
    const float rstd = rsqrtf(ss * inv_w + eps);
    c = c * rstd * inv_w;  // mean(xhat * w * dy)
#pragma unroll
    for (int k = 0; k < VPT; ++k) {
      const int64_t j = lane + 32 * k;
      if (j >= width) continue;
      const float xhat = sv[k] * rstd;
      dw[k] += g[k] * xhat;
      if (ds || dsx) {
        float v = (s_w[j] * g[k] - xhat * c) * rstd;
        if (dres) v += dr[k];
        if (ds) store(ds + base + j, v);
        if (dsx) store(dsx + base + j, v);
      }
    }
  }
  if (!partial) return;
#pragma unroll
  for (int k = 0; k < VPT; ++k) {
    const int64_t j = lane + 32 * k;
    if (j < width) warp_dw[warp * width + j] = dw[k];
  }
  __syncthreads();
  for (int64_t j = threadIdx.x; j < width; j += kWarpRowThreads) {
    float acc = 0.f;
#pragma unroll
    for (int q = 0; q < kWarps; ++q) acc += warp_dw[q * width + j];
    partial[blockIdx.x * width + j] = acc;
  }
}

// Forward with a warp per row (widths up to 32 * VPT): same arithmetic as rmsnorm_fwd_kernel, with
// the row's sum of squares reduced by shuffles. The row is loaded before anything is stored, and
// the stored residual's rounding is applied in registers (what reading it back gave).
template <int VPT, typename X, typename R> __global__ void __launch_bounds__(kWarpRowThreads)
    rmsnorm_fwd_warp_kernel(X* y, R* s, const X* x, const R* residual, const R* weight, int64_t rows,
                            int64_t width, float eps) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (kWarpRowThreads / 32);
  for (int64_t r = blockIdx.x * (int64_t)(kWarpRowThreads / 32) + (threadIdx.x >> 5); r < rows; r += warps) {
    const int64_t base = r * width;
    float sv[VPT];
#pragma unroll
    for (int k = 0; k < VPT; ++k) {
      const int64_t j = lane + 32 * k;
      sv[k] = 0.f;
      if (j >= width) continue;
      sv[k] = to_acc(x[base + j]);
      if (residual) sv[k] += to_acc(residual[base + j]);
    }
    float ss = 0.f;
#pragma unroll
    for (int k = 0; k < VPT; ++k) {
      const int64_t j = lane + 32 * k;
      if (j >= width) continue;
      sv[k] = rounded<R>(sv[k]);
      store(s + base + j, sv[k]);
      ss += sv[k] * sv[k];
    }
    const float rstd = rsqrtf(warp_sum(ss) / static_cast<float>(width) + eps);
#pragma unroll
    for (int k = 0; k < VPT; ++k) {
      const int64_t j = lane + 32 * k;
      if (j < width) store(y + base + j, sv[k] * rstd * to_acc(weight[j]));
    }
  }
}

// Columns per lane for the warp-per-row kernels; false when the row is too wide for them.
template <typename Fn> bool dispatch_vpt(int64_t width, Fn&& fn) {
  const int64_t need = (width + 31) / 32;
  if (need <= 1) fn(std::integral_constant<int, 1>{});
  else if (need <= 2) fn(std::integral_constant<int, 2>{});
  else if (need <= 4) fn(std::integral_constant<int, 4>{});
  else if (need <= 8) fn(std::integral_constant<int, 8>{});
  else if (need <= 16) fn(std::integral_constant<int, 16>{});
  else if (need <= 24) fn(std::integral_constant<int, 24>{});
  else if (need <= 32) fn(std::integral_constant<int, 32>{});
  else return false;
  return true;
}

}  // namespace

template <typename X, typename R> void rmsnorm_add_fwd(X* y, R* s, const X* x, const R* residual,
                                                       const R* weight, int64_t rows, int64_t width, double eps,
                                                       void* stream) {
  S6_CHECK(rows >= 0 && width >= 0, "rmsnorm_add_fwd: bad sizes ({}, {})", rows, width);
  if (rows == 0 || width == 0) return;
  const bool by_warp = dispatch_vpt(width, [&](auto vtag) {
    constexpr int VPT = decltype(vtag)::value;
    const int64_t warp_blocks = (rows + kWarpRowThreads / 32 - 1) / (kWarpRowThreads / 32);
    rmsnorm_fwd_warp_kernel<VPT><<<static_cast<unsigned>(warp_blocks < 65535 * 4 ? warp_blocks : 65535 * 4),
                                   kWarpRowThreads, 0, as_stream(stream)>>>(
        dev(y), dev(s), dev(x), dev(residual), dev(weight), rows, width, static_cast<float>(eps));
  });
  if (!by_warp) {
    const unsigned blocks = static_cast<unsigned>(rows < 65535 * 4 ? rows : 65535 * 4);
    rmsnorm_fwd_kernel<<<blocks, threads_for(width), 0, as_stream(stream)>>>(
        dev(y), dev(s), dev(x), dev(residual), dev(weight), rows, width, static_cast<float>(eps));
  }
  check_launch("rmsnorm_add_fwd");
}

template <typename X, typename R> void rmsnorm_add_bwd(R* ds, X* dsx, R* dweight, const X* dy,
                                                       const R* dresidual_out, const R* s, const R* weight,
                                                       int64_t rows, int64_t width, double eps, void* stream) {
  S6_CHECK(rows >= 0 && width >= 0, "rmsnorm_add_bwd: bad sizes ({}, {})", rows, width);
  if (width == 0 || (!ds && !dsx && !dweight)) return;
  cudaStream_t st = as_stream(stream);
  // Block count depends on the sizes only, so results do not depend on the device.
  int64_t per = (rows + 1023) / 1024;
  if (per < 4) per = 4;
  const int64_t blocks = rows > 0 ? (rows + per - 1) / per : 1;
  Scratch partial(dweight ? blocks * width * static_cast<int64_t>(sizeof(float)) : 0);
  const bool by_warp = dispatch_vpt(width, [&](auto vtag) {
    constexpr int VPT = decltype(vtag)::value;
    const size_t smem = sizeof(float) * static_cast<size_t>(width) * (1 + (dweight ? kWarpRowThreads / 32 : 0));
    rmsnorm_bwd_warp_kernel<VPT><<<static_cast<unsigned>(blocks), kWarpRowThreads, smem, st>>>(
        dev(ds), dev(dsx), partial.as<float>(), dev(dy), dev(dresidual_out), dev(s), dev(weight), rows, width,
        static_cast<float>(eps), per);
  });
  if (!by_warp)
    rmsnorm_bwd_kernel<<<static_cast<unsigned>(blocks), threads_for(width), 0, st>>>(
        dev(ds), dev(dsx), partial.as<float>(), dev(dy), dev(dresidual_out), dev(s), dev(weight), rows, width,
        static_cast<float>(eps), per);
  check_launch("rmsnorm_add_bwd");
  if (dweight) {
    launch_colsum(dev(dweight), partial.as<float>(), blocks, width, st);
    check_launch("rmsnorm_add_bwd (weight reduction)");
  }
}

#define S6_INSTANTIATE(X, R)                                                                                  \
  template void rmsnorm_add_fwd<X, R>(X*, R*, const X*, const R*, const R*, int64_t, int64_t, double, void*); \
  template void rmsnorm_add_bwd<X, R>(R*, X*, R*, const X*, const R*, const R*, const R*, int64_t, int64_t,   \
                                      double, void*);
S6_INSTANTIATE(float, float)
S6_INSTANTIATE(BFloat16, BFloat16)
S6_INSTANTIATE(BFloat16, float)  // mixed precision: bf16 activations, fp32 residual stream
#undef S6_INSTANTIATE

}  // namespace s6::kernels::cuda
