// The selective scan's arguments as plain data, one layout for the CPU reference
// (kernels/cpu/selective_scan.h) and the CUDA launchers (kernels/cuda/selective_scan.h), filled once
// by the caller (layers/scan_op.cpp, tests, bench). Channel-last layout:
//   u, delta, z, out (batch, length, dim); B, C (batch, length, dstate); A (dim, dstate);
//   D, delta_bias (dim); initial_state, final_state (batch, dim, dstate).
#pragma once
#include <cstdint>

namespace s6::kernels {

struct ScanDims {
  int64_t batch = 0, length = 0, dim = 0, dstate = 0;
};

// The element type of u, delta, B, C, z, out and their gradients. On CUDA: Float32 or BFloat16,
// while A, D, delta_bias, every state and dA/dD/ddelta_bias are float32 whatever it is. On the
// CPU: Float32 or Float64, for every pointer alike.
enum class ScanDType : int { Float32 = 0, BFloat16 = 1, Float64 = 2 };

// How the CUDA scan cuts up its work, decided once per problem (kernels::cuda::plan_scan) and
// used unchanged by the forward and the backward of one call: chunk fixes the shape of the saved
// chunk-boundary states. None of the choices changes a result beyond float rounding, and
// sync_staging changes no bit. The CPU reference takes no plan.
// A default-constructed plan is invalid (the launchers refuse it): take plan_scan's.
struct ScanPlan {
  int64_t chunk = 0;          // steps per chunk: 16 or 64
  int bwd_states = 0;         // the backward main kernel's states per thread at dstate 9..16: 4 or 8
  int64_t fwd_blocks = 0;     // target grid size (blocks) of the forward's super-chunk split
  int64_t bwd_blocks = 0;     // the same for the backward
  bool sync_staging = false;  // the backward stages synchronously even where cp.async fits
};

// Requested plan choices; 0 / false leaves a choice to plan_scan. Read from the environment in one
// place only (layers/scan_plan.cpp, documented in docs/scan_notes.md); tests and bench/ set them
// directly.
struct ScanPlanOverrides {
  int64_t chunk = 0;       // 16 or 64
  int bwd_states = 0;      // 4 or 8
  int64_t fwd_blocks = 0;  // > 0
  int64_t bwd_blocks = 0;  // > 0
  bool sync_staging = false;
};

// One forward call. Optional pointers (D, z, delta_bias, initial_state, final_state) may be null;
// initial_state null means zeros. CUDA only: chunk_states (batch, scan_num_chunks, dim, dstate)
// fp32, written by the forward and read by the backward (it already includes initial_state);
// workspace: float scratch of scan_{fwd,bwd}_workspace_floats; stream: a cudaStream_t as void*;
// bc_row_stride: elements between consecutive (b, t) rows of B and C (>= dstate; 0 = dstate):
// they may be column blocks of one wider matrix, as x_proj's output is (the CPU takes 0 only).
struct ScanParams {
  ScanDims dims;
  ScanDType dtype = ScanDType::Float32;
  bool delta_softplus = true;
  int64_t bc_row_stride = 0;
  // inputs
  const void* u = nullptr;
  const void* delta = nullptr;
  const void* A = nullptr;
  const void* B = nullptr;
  const void* C = nullptr;
  const void* D = nullptr;
  const void* z = nullptr;
  const void* delta_bias = nullptr;
  const void* initial_state = nullptr;
  // outputs (the forward's)
  void* out = nullptr;
  void* final_state = nullptr;
  // CUDA only
  float* chunk_states = nullptr;
  float* workspace = nullptr;
  void* stream = nullptr;
};

// One backward call: the forward's inputs (out and final_state unused) plus dout and the
// gradients. Every non-null gradient is set, not accumulated; dz needs z. dB and dC are contiguous
// (batch, length, dstate) whatever bc_row_stride is.
struct ScanGradParams : ScanParams {
  const void* dout = nullptr;
  void* du = nullptr;
  void* ddelta = nullptr;
  void* dA = nullptr;
  void* dB = nullptr;
  void* dC = nullptr;
  void* dD = nullptr;
  void* dz = nullptr;
  void* ddelta_bias = nullptr;
};

}  // namespace s6::kernels
