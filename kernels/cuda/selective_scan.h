// CUDA selective scan (Mamba S6, SPEC 2-3): forward, backward and the single-token step, same
// semantics and channel-last layout as kernels/cpu/selective_scan.h:
//   u, delta, z, out (batch, length, dim); B, C (batch, length, dstate); A (dim, dstate);
//   D, delta_bias (dim); states (batch, dim, dstate).
// u/delta/z/B/C/out and du/ddelta/dz/dB/dC are float32 or bfloat16 (`dtype`); A, D, delta_bias,
// every state and dA/dD/ddelta_bias are always float32; arithmetic is float32 throughout.
// Plain C++ header (no CUDA includes): CPU-only builds may include it, the launchers exist only
// when built with CUDA. Optional pointers may be null. Argument order: outputs (then workspace),
// inputs, dims, input dtype, stream (a cudaStream_t passed as void*), and for the sequence scan the
// row stride of B and C (elements between consecutive (b, t) rows, >= dstate; 0 = dstate): they may
// be column blocks of one wider matrix, as x_proj's output is. dB and dC are always contiguous.
//
// Work is split along L in chunks of 16 or 64 steps (scan_chunk_length): the forward saves the
// state entering every chunk, chunk_states (batch, n_chunks, dim, dstate) fp32, which the backward
// needs; nothing of size (batch, length, dim, dstate) is ever stored. Gradients are deterministic
// (per-block partials summed in a fixed order, no float atomics).
#pragma once
#include <cstdint>

namespace s6::kernels::cuda {

enum class ScanDType : int { Float32 = 0, BFloat16 = 1 };

constexpr int64_t kScanChunkLength = 64;       // the longest chunk
constexpr int64_t kScanShortChunkLength = 16;  // one staged sub-chunk
constexpr int64_t kScanMaxDState = 256;

// The chunk length the forward and the backward use for this problem (the same for both): 16 when
// the problem is too small to fill the GPU with 64-step chunks (4x the blocks; the backward then
// needs no checkpoint sweep inside a chunk), else 64 (a quarter of the chunk_states memory).
// S6_SCAN_CHUNK=16|64 overrides it (measurements, tests). Defined in CUDA builds only.
int64_t scan_chunk_length(int64_t batch, int64_t length, int64_t dim, int64_t dstate);
inline int64_t scan_num_chunks(int64_t length, int64_t chunk) {
  return length <= 0 ? 1 : (length + chunk - 1) / chunk;
}
inline int64_t scan_num_chunks(int64_t batch, int64_t length, int64_t dim, int64_t dstate) {
  return scan_num_chunks(length, scan_chunk_length(batch, length, dim, dstate));
}
// Floats of the chunk-boundary states the forward writes and the backward reads.
inline int64_t scan_chunk_states_floats(int64_t batch, int64_t length, int64_t dim, int64_t dstate) {
  return batch * scan_num_chunks(batch, length, dim, dstate) * dim * dstate;
}
// Float32 scratch the launchers need (the caller allocates it; contents need not be initialized).
int64_t scan_fwd_workspace_floats(int64_t batch, int64_t length, int64_t dim, int64_t dstate);
int64_t scan_bwd_workspace_floats(int64_t batch, int64_t length, int64_t dim, int64_t dstate);

// out = (C.h + D u) * silu(z) (no gate without z). chunk_states is required; final_state (the state
// after the last step) and initial_state (else zeros) are optional.
void selective_scan_fwd(void* out, float* final_state, float* chunk_states, float* workspace,
                        const void* u, const void* delta, const float* A, const void* B,
                        const void* C, const float* D, const void* z, const float* delta_bias,
                        const float* initial_state, bool delta_softplus, int64_t batch,
                        int64_t length, int64_t dim, int64_t dstate, ScanDType dtype, void* stream,
                        int64_t bc_row_stride = 0);

// Gradients given dout, using the forward's chunk_states (which already include initial_state).
// Every non-null output is set (not accumulated); dz is needed (and only meaningful) with z.
void selective_scan_bwd(void* du, void* ddelta, float* dA, void* dB, void* dC, float* dD, void* dz,
                        float* ddelta_bias, float* workspace, const void* dout, const void* u,
                        const void* delta, const float* A, const void* B, const void* C,
                        const float* D, const void* z, const float* delta_bias,
                        const float* chunk_states, bool delta_softplus, int64_t batch,
                        int64_t length, int64_t dim, int64_t dstate, ScanDType dtype, void* stream,
                        int64_t bc_row_stride = 0);

// One recurrent-inference token: u, delta, z, out (batch, dim); B, C (batch, dstate); state
// (batch, dim, dstate) fp32 updated in place: dt = softplus(delta + bias); state = exp(dt A) state
// + dt B u; y = C.state + D u; out = y * silu(z).
void selective_scan_step(void* out, float* state, const void* u, const void* delta, const float* A,
                         const void* B, const void* C, const float* D, const void* z,
                         const float* delta_bias, bool delta_softplus, int64_t batch, int64_t dim,
                         int64_t dstate, ScanDType dtype, void* stream);

}  // namespace s6::kernels::cuda
