// CUDA depthwise causal conv1d with optional fused SiLU (docs/model.md 4.2), channel-last: x, out
// (batch, length, dim); weight (dim, width), widths 1-4; bias (dim) or null; initial_state
// (batch, dim, width-1) or null (zeros). T is float or s6::BFloat16; arithmetic in fp32.
#pragma once
#include <cstdint>

#include "core/dtype.h"
#include "kernels/cpu/causal_conv1d.h"

namespace s6::kernels::cuda {

using cpu::ConvDims;

// out[b,t,d] = act(bias[d] + sum_w weight[d,w] * x[b, t-(width-1)+w, d]).
template <typename T> void causal_conv1d_fwd(T* out, const T* x, const T* weight, const T* bias,
                                             const T* initial_state, bool silu, const ConvDims& dims,
                                             void* stream);

// Sets dx, dweight, dbias (each may be null). Recomputes the pre-activation; dweight/dbias are
// reduced over (batch, time chunks) through an fp32 partial buffer in a fixed order (deterministic).
template <typename T> void causal_conv1d_bwd(T* dx, T* dweight, T* dbias, const T* dout, const T* x,
                                             const T* weight, const T* bias, const T* initial_state, bool silu,
                                             const ConvDims& dims, void* stream);

// One decoding step: conv_state (batch, dim, width) is shifted left by one and x[b, d] appended;
// out (batch, dim) = act(bias + sum_w weight[d,w] * conv_state[b,d,w]). x row b starts at
// x + b * x_batch_stride (so a column slice of a wider (batch, k) tensor can be passed as is).
template <typename T> void causal_conv1d_update(T* out, T* conv_state, const T* x, const T* weight,
                                                const T* bias, bool silu, int64_t batch, int64_t dim,
                                                int64_t width, int64_t x_batch_stride, void* stream);

}  // namespace s6::kernels::cuda
