// CPU reference selective scan (docs/model.md 2.1-2.3), float32 and float64, on the plain-data arguments
// of kernels/scan_params.h (the CUDA launchers take the same structs). T must match params.dtype
// (Float32 or Float64; every pointer is a T); bc_row_stride must be 0 (contiguous B and C); the
// CUDA-only fields (chunk_states, workspace, stream) are ignored.
#pragma once
#include "kernels/scan_params.h"

namespace s6::kernels::cpu {

// out = (C.h + D u) * silu(z); writes final_state if non-null; starts from initial_state if
// non-null (else zeros).
template <typename T> void selective_scan_fwd(const ScanParams& params);

// Gradients given dout; each non-null gradient is set (not accumulated). Recomputes the states of
// one (batch, channel) row at a time, so no (batch, length, dim, dstate) buffer ever exists.
// Deterministic: the reduction order does not depend on the thread count.
template <typename T> void selective_scan_bwd(const ScanGradParams& params);

}  // namespace s6::kernels::cpu
