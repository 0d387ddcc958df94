// CPU fused residual-add + RMSNorm over rows of width `width` (docs/model.md 1.5).
#pragma once
#include <cstdint>

namespace s6::kernels::cpu {

// s = x + residual (residual may be null); y = s * rsqrt(mean(s^2) + eps) * weight.
template <typename T> void rmsnorm_add_fwd(T* y, T* s, const T* x, const T* residual, const T* weight,
                                           int64_t rows, int64_t width, double eps);

// ds = (w dy - xhat c) rstd + dresidual_out with xhat = s rstd, c = mean(xhat w dy); dresidual_out
// may be null. dweight = sum over rows of dy xhat, in a fixed block order (deterministic).
// Either output may be null.
template <typename T> void rmsnorm_add_bwd(T* ds, T* dweight, const T* dy, const T* dresidual_out, const T* s,
                                           const T* weight, int64_t rows, int64_t width, double eps);

}  // namespace s6::kernels::cpu
