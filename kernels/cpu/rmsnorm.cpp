// CPU fused add + RMSNorm; backward recomputes rstd from the saved sum s.
#include "kernels/cpu/rmsnorm.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace s6::kernels::cpu {

namespace {
template <typename T> T row_rstd(const T* s, int64_t width, double eps) {
  double ss = 0;
  for (int64_t j = 0; j < width; ++j) ss += static_cast<double>(s[j]) * s[j];
  return static_cast<T>(1.0 / std::sqrt(ss / static_cast<double>(width) + eps));
}
}  // namespace

template <typename T> void rmsnorm_add_fwd(T* y, T* s, const T* x, const T* residual, const T* weight,
                                           int64_t rows, int64_t width, double eps) {
#pragma omp parallel for if (rows * width > 16384)
  for (int64_t r = 0; r < rows; ++r) {
    T* sr = s + r * width;
    const T* xr = x + r * width;
    for (int64_t j = 0; j < width; ++j) sr[j] = residual ? xr[j] + residual[r * width + j] : xr[j];
    T rstd = row_rstd(sr, width, eps);
    for (int64_t j = 0; j < width; ++j) y[r * width + j] = sr[j] * rstd * weight[j];
  }
}

template <typename T> void rmsnorm_add_bwd(T* ds, T* dweight, const T* dy, const T* dresidual_out, const T* s,
                                           const T* weight, int64_t rows, int64_t width, double eps) {
  constexpr int64_t kRowsPerBlock = 64;
  int64_t blocks = (rows + kRowsPerBlock - 1) / kRowsPerBlock;
  std::vector<T> partial(dweight ? static_cast<size_t>(blocks * width) : 0, T(0));
#pragma omp parallel for if (rows * width > 16384)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    int64_t end = std::min(rows, (blk + 1) * kRowsPerBlock);
    for (int64_t r = blk * kRowsPerBlock; r < end; ++r) {
      const T* sr = s + r * width;
      const T* gr = dy + r * width;
      T rstd = row_rstd(sr, width, eps);
      if (dweight)
        for (int64_t j = 0; j < width; ++j) partial[blk * width + j] += gr[j] * sr[j] * rstd;
      if (!ds) continue;
      T c = 0;
      for (int64_t j = 0; j < width; ++j) c += sr[j] * rstd * weight[j] * gr[j];
      c /= static_cast<T>(width);
      for (int64_t j = 0; j < width; ++j) {
        T v = (weight[j] * gr[j] - sr[j] * rstd * c) * rstd;
        ds[r * width + j] = dresidual_out ? v + dresidual_out[r * width + j] : v;
      }
    }
  }
  if (dweight) {
    for (int64_t j = 0; j < width; ++j) dweight[j] = T(0);
    for (int64_t blk = 0; blk < blocks; ++blk)
      for (int64_t j = 0; j < width; ++j) dweight[j] += partial[blk * width + j];
  }
}

template void rmsnorm_add_fwd<float>(float*, float*, const float*, const float*, const float*, int64_t, int64_t,
                                     double);
template void rmsnorm_add_fwd<double>(double*, double*, const double*, const double*, const double*, int64_t,
                                      int64_t, double);
template void rmsnorm_add_bwd<float>(float*, float*, const float*, const float*, const float*, const float*,
                                     int64_t, int64_t, double);
template void rmsnorm_add_bwd<double>(double*, double*, const double*, const double*, const double*,
                                      const double*, int64_t, int64_t, double);

}  // namespace s6::kernels::cpu
