// CUDA fused residual-add + RMSNorm over rows of width `width` (docs/model.md 1.5). Contiguous; arithmetic
// in fp32. X (x, y, dy, dx) and R (residual, s, weight, ds, dweight) are both float, both
// s6::BFloat16, or X = BFloat16 over R = float (mixed precision: the residual stream stays fp32 and
// the norm reads the bf16 mixer output and writes the bf16 input of the next projection directly).
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace s6::kernels::cuda {

// s = x + residual (residual may be null), stored in T; y = s * rsqrt(mean(s^2) + eps) * weight,
// computed from the stored s (so backward, which recomputes rstd from s, sees the same values).
template <typename X, typename R> void rmsnorm_add_fwd(X* y, R* s, const X* x, const R* residual,
                                                       const R* weight, int64_t rows, int64_t width, double eps,
                                                       void* stream);

// ds = (w dy - xhat c) rstd + dresidual_out (xhat = s rstd, c = mean(xhat w dy)); dresidual_out
// may be null. dweight = sum over rows of dy xhat via fp32 per-block partials summed in order
// (deterministic). dsx is the same ds stored as X (the gradient for x when X differs from R). ds,
// dsx or dweight may be null.
template <typename X, typename R> void rmsnorm_add_bwd(R* ds, X* dsx, R* dweight, const X* dy,
                                                       const R* dresidual_out, const R* s, const R* weight,
                                                       int64_t rows, int64_t width, double eps, void* stream);

}  // namespace s6::kernels::cuda
