// CUDA optimizer kernels: AdamW on fp32 parameters/state (same formula and fp32 arithmetic as
// kernels/cpu/optim.h), the deterministic sum of squares of a gradient, and the clip coefficient
// of a global norm (the last two also without host synchronisation).
#pragma once
#include <cstdint>

#include "core/dtype.h"
#include "kernels/cpu/optim.h"

namespace s6::kernels::cuda {

// One AdamW step (see kernels/cpu/optim.h); the gradient is multiplied by hp.grad_scale and, when
// device_grad_scale (a device float, e.g. from clip_coefficient) is given, by it too.
void adamw(float* param, float* exp_avg, float* exp_avg_sq, const float* grad, int64_t n,
           const AdamWParams& hp, void* stream);
void adamw(float* param, float* exp_avg, float* exp_avg_sq, const float* grad, int64_t n,
           const AdamWParams& hp, const float* device_grad_scale, void* stream);

// Sum of x[i]^2, two passes with fixed grids (deterministic). This one waits for the result.
double sum_of_squares(const float* x, int64_t n, void* stream);
// out[0] (device float) = sum of x[i]^2, without synchronising. T is float or s6::BFloat16.
template <typename T>
void sum_of_squares_device(float* out, const T* x, int64_t n, void* stream);

// coef[0] = min(1, max_norm / (sqrt(sum_k sumsq[k]) + 1e-6)) over k < count (PyTorch's
// clip_grad_norm_); norm[0] (may be null) = the global norm. Device pointers.
void clip_coefficient(float* coef, float* norm, const float* sumsq, int64_t count, double max_norm,
                      void* stream);

}  // namespace s6::kernels::cuda
