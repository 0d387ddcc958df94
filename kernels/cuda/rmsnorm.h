// CUDA fused residual-add + RMSNorm over rows of width `width` (SPEC 1.5). Contiguous; T is
// float or s6::BFloat16, arithmetic in fp32.
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace s6::kernels::cuda {

// s = x + residual (residual may be null), stored in T; y = s * rsqrt(mean(s^2) + eps) * weight,
// computed from the stored s (so backward, which recomputes rstd from s, sees the same values).
template <typename T>
void rmsnorm_add_fwd(T* y, T* s, const T* x, const T* residual, const T* weight, int64_t rows,
                     int64_t width, double eps, void* stream);

// ds = (w dy - xhat c) rstd + dresidual_out (xhat = s rstd, c = mean(xhat w dy)); dresidual_out
// may be null. dweight = sum over rows of dy xhat via fp32 per-block partials summed in order
// (deterministic). ds or dweight may be null.
template <typename T>
void rmsnorm_add_bwd(T* ds, T* dweight, const T* dy, const T* dresidual_out, const T* s,
                     const T* weight, int64_t rows, int64_t width, double eps, void* stream);

}  // namespace s6::kernels::cuda
