// CUDA selective scan (Mamba S6, docs/model.md 2-3): forward, backward and the single-token step, same
// semantics, layout and argument structs (kernels/scan_params.h) as the CPU reference.
// u/delta/z/B/C/out and du/ddelta/dz/dB/dC are float32 or bfloat16 (params.dtype); A, D,
// delta_bias, every state and dA/dD/ddelta_bias are always float32; arithmetic is float32
// throughout. Plain C++ header (no CUDA includes): CPU-only builds may include it, the functions
// exist only when built with CUDA.
//
// Work is split along L in chunks of 16 or 64 steps (ScanPlan::chunk, from plan_scan): the forward
// saves the state entering every chunk, chunk_states (batch, n_chunks, dim, dstate) fp32, which
// the backward needs; nothing of size (batch, length, dim, dstate) is ever stored. The forward and
// the backward of one call must use the same plan. Gradients are deterministic (per-block partials
// summed in a fixed order, no float atomics).
#pragma once
#include <cstdint>

#include "kernels/scan_params.h"

namespace s6::kernels::cuda {

constexpr int64_t kScanChunkLength = 64;       // the longest chunk
constexpr int64_t kScanShortChunkLength = 16;  // one staged sub-chunk
constexpr int64_t kScanMaxDState = 256;

// The plan for this problem on the current device: 16-step chunks when the problem is too small to
// fill the GPU with 64-step ones (4x the blocks; the backward then needs no checkpoint sweep inside
// a chunk), else 64 (a quarter of the chunk_states memory); 8 states per thread in the backward's
// main kernel with 64-step chunks, 4 with 16-step ones; grid targets tuned per SM
// (docs/scan_notes.md). Each set field of `overrides` replaces that choice (an invalid one is an
// error naming it).
ScanPlan plan_scan(const ScanDims& dims, const ScanPlanOverrides& overrides = {});

inline int64_t scan_num_chunks(int64_t length, int64_t chunk) {
  return length <= 0 ? 1 : (length + chunk - 1) / chunk;
}
// Floats of the chunk-boundary states the forward writes and the backward reads.
inline int64_t scan_chunk_states_floats(const ScanDims& d, const ScanPlan& plan) {
  return d.batch * scan_num_chunks(d.length, plan.chunk) * d.dim * d.dstate;
}
// Float32 scratch the launchers need (the caller allocates it; contents need not be initialized).
int64_t scan_fwd_workspace_floats(const ScanDims& dims, const ScanPlan& plan);
int64_t scan_bwd_workspace_floats(const ScanDims& dims, const ScanPlan& plan);

// out = (C.h + D u) * silu(z) (no gate without z). chunk_states and workspace are required;
// final_state (the state after the last step) and initial_state (else zeros) are optional.
void selective_scan_fwd(const ScanParams& params, const ScanPlan& plan);

// Gradients given dout, using the forward's chunk_states (which already include initial_state),
// under the forward's plan.
void selective_scan_bwd(const ScanGradParams& params, const ScanPlan& plan);

// One recurrent-inference token: u, delta, z, out (batch, dim); B, C (batch, dstate); state
// (batch, dim, dstate) fp32 updated in place: dt = softplus(delta + bias); state = exp(dt A) state
// + dt B u; y = C.state + D u; out = y * silu(z).
void selective_scan_step(void* out, float* state, const void* u, const void* delta, const float* A,
                         const void* B, const void* C, const float* D, const void* z, const float* delta_bias,
                         bool delta_softplus, int64_t batch, int64_t dim, int64_t dstate, ScanDType dtype,
                         void* stream);

}  // namespace s6::kernels::cuda
