// CPU reference depthwise causal conv1d with optional fused SiLU (docs/model.md 4.2), channel-last layout:
// x, out (batch, length, dim); weight (dim, width); bias (dim) or null;
// initial_state (batch, dim, width-1) = the inputs just before t=0 (zeros when null).
#pragma once
#include <cstdint>

namespace s6::kernels::cpu {

struct ConvDims {
  int64_t batch, length, dim, width;
};

// out[b,t,d] = act(bias[d] + sum_w weight[d,w] * x[b, t-(width-1)+w, d]).
template <typename T> void causal_conv1d_fwd(T* out, const T* x, const T* weight, const T* bias,
                                             const T* initial_state, bool silu, const ConvDims& dims);

// Sets dx, dweight, dbias (each may be null); recomputes the pre-activation for the SiLU.
// dweight/dbias are reduced over (batch, time) in a fixed order (deterministic).
template <typename T> void causal_conv1d_bwd(T* dx, T* dweight, T* dbias, const T* dout, const T* x,
                                             const T* weight, const T* bias, const T* initial_state, bool silu,
                                             const ConvDims& dims);

}  // namespace s6::kernels::cpu
