// CPU reference selective scan (SPEC 2.1-2.3), float32 and float64, channel-last layout:
// u, delta, z, out (batch, length, dim); B, C (batch, length, dstate); A (dim, dstate);
// D, delta_bias (dim); states (batch, dim, dstate). Optional inputs may be null.
#pragma once
#include <cstdint>

namespace s6::kernels::cpu {

struct ScanDims {
  int64_t batch, length, dim, dstate;
};

// out = (C.h + D u) * silu(z); writes final_state if non-null; starts from initial_state if
// non-null (else zeros).
template <typename T>
void selective_scan_fwd(T* out, T* final_state, const T* u, const T* delta, const T* A, const T* B,
                        const T* C, const T* D, const T* z, const T* delta_bias, bool softplus,
                        const T* initial_state, const ScanDims& dims);

// Gradients given dout; each non-null output is set (not accumulated). Recomputes the states of
// one (batch, channel) row at a time, so no (batch, length, dim, dstate) buffer ever exists.
// Deterministic: the reduction order does not depend on the thread count.
template <typename T>
void selective_scan_bwd(T* du, T* ddelta, T* dA, T* dB, T* dC, T* dD, T* dz, T* ddelta_bias,
                        const T* dout, const T* u, const T* delta, const T* A, const T* B,
                        const T* C, const T* D, const T* z, const T* delta_bias, bool softplus,
                        const T* initial_state, const ScanDims& dims);

}  // namespace s6::kernels::cpu
