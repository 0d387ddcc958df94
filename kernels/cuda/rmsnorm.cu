// CUDA fused add + RMSNorm. Forward: one block per row. Backward: each block owns a fixed range of
// rows; thread j owns columns j, j+blockDim, ... of the block's dweight partial row (no races),
// and the partial rows are summed in order by a second pass (deterministic).
#include "kernels/cuda/rmsnorm.h"

#include "kernels/cuda/ops_common.cuh"

namespace s6::kernels::cuda {

namespace {

using namespace detail;

int threads_for(int64_t width) {
  int64_t t = (width + 31) / 32 * 32;
  return static_cast<int>(t < 32 ? 32 : (t > 256 ? 256 : t));
}

template <typename D>
__global__ void rmsnorm_fwd_kernel(D* y, D* s, const D* x, const D* residual, const D* weight,
                                   int64_t rows, int64_t width, float eps) {
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

template <typename D>
__global__ void rmsnorm_bwd_kernel(D* ds, float* partial, const D* dy, const D* dres, const D* s,
                                   const D* weight, int64_t rows, int64_t width, float eps,
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
      if (ds) {
        float v = (to_acc(weight[j]) * g - xhat * c) * rstd;
        if (dres) v += to_acc(dres[base + j]);
        store(ds + base + j, v);
      }
    }
  }
}

}  // namespace

template <typename T>
void rmsnorm_add_fwd(T* y, T* s, const T* x, const T* residual, const T* weight, int64_t rows,
                     int64_t width, double eps, void* stream) {
  S6_CHECK(rows >= 0 && width >= 0, "rmsnorm_add_fwd: bad sizes ({}, {})", rows, width);
  if (rows == 0 || width == 0) return;
  const unsigned blocks = static_cast<unsigned>(rows < 65535 * 4 ? rows : 65535 * 4);
  rmsnorm_fwd_kernel<<<blocks, threads_for(width), 0, as_stream(stream)>>>(
      dev(y), dev(s), dev(x), dev(residual), dev(weight), rows, width, static_cast<float>(eps));
  check_launch("rmsnorm_add_fwd");
}

template <typename T>
void rmsnorm_add_bwd(T* ds, T* dweight, const T* dy, const T* dresidual_out, const T* s,
                     const T* weight, int64_t rows, int64_t width, double eps, void* stream) {
  S6_CHECK(rows >= 0 && width >= 0, "rmsnorm_add_bwd: bad sizes ({}, {})", rows, width);
  if (width == 0 || (!ds && !dweight)) return;
  cudaStream_t st = as_stream(stream);
  // Block count depends on the sizes only, so results do not depend on the device.
  int64_t per = (rows + 1023) / 1024;
  if (per < 4) per = 4;
  const int64_t blocks = rows > 0 ? (rows + per - 1) / per : 1;
  Scratch partial(dweight ? blocks * width * static_cast<int64_t>(sizeof(float)) : 0);
  rmsnorm_bwd_kernel<<<static_cast<unsigned>(blocks), threads_for(width), 0, st>>>(
      dev(ds), partial.as<float>(), dev(dy), dev(dresidual_out), dev(s), dev(weight), rows, width,
      static_cast<float>(eps), per);
  check_launch("rmsnorm_add_bwd");
  if (dweight) {
    launch_colsum(dev(dweight), partial.as<float>(), blocks, width, st);
    check_launch("rmsnorm_add_bwd (weight reduction)");
  }
}

#define S6_INSTANTIATE(T)                                                                       \
  template void rmsnorm_add_fwd<T>(T*, T*, const T*, const T*, const T*, int64_t, int64_t,      \
                                   double, void*);                                              \
  template void rmsnorm_add_bwd<T>(T*, T*, const T*, const T*, const T*, const T*, int64_t,     \
                                   int64_t, double, void*);
S6_INSTANTIATE(float)
S6_INSTANTIATE(BFloat16)
#undef S6_INSTANTIATE

}  // namespace s6::kernels::cuda
