// CUDA optimizer kernels, none of which synchronise with the host (so a graph can capture them):
// AdamW on fp32 parameters/state (same formula and fp32 arithmetic as kernels/cpu/optim.h) and the
// deterministic sums of squares, each over every parameter in one launch, and the end of a step.
#pragma once
#include <cstdint>
#include <vector>

#include "core/dtype.h"
#include "kernels/cpu/optim.h"

namespace s6::kernels::cuda {

// The end of a training step on the device, for CUDA-graph replay; bit-for-bit what the host does
// in eager mode: norm = sqrt of the per-parameter sums (float, summed in order in double),
// scale = the clip factor (double, then float), skip = loss or norm not finite.
struct DeviceStepStatus {
  double loss;
  double norm;
  float scale;
  int32_t skip;
};
void finish_gradient_norm(DeviceStepStatus* status, const float* sumsq, int64_t count, const float* loss,
                          double max_norm, void* stream);

// Per-step AdamW scalars read from the device (uploaded before each replay).
struct DeviceAdamWScalars {
  float lr, bias_correction1, bias_correction2, lr_times_decay;
};
DeviceAdamWScalars adamw_device_scalars(const AdamWParams& hp);  // computed as adamw() does
// Multi-tensor forms: one launch covers every parameter, split into chunks of kMultiTensorChunk
// elements (a parameter's chunks are consecutive). The tables live in device memory. A block per
// chunk: small enough that a small model's few tensors still spread over many SMs.
constexpr int64_t kMultiTensorChunk = 8192;
struct MultiTensorEntry {
  float* param;
  float* exp_avg;
  float* exp_avg_sq;
  const float* grad;
  int64_t numel;
  int32_t slot;     // where its sum of squares goes (the parameter's index)
  int32_t decayed;  // weight decay applies
};
struct MultiTensorChunk {
  int64_t entry;  // index into the entries table; chunks are ordered by entry
  int64_t start;  // first element of the chunk
};
// Appends the chunks of entry `index` (numel elements) to `chunks`.
void append_multi_tensor_chunks(std::vector<MultiTensorChunk>& chunks, int64_t index, int64_t numel);
// sumsq[entry.slot] = sum of grad^2 per entry (deterministic: fixed chunks, fixed order);
// partial: one float per chunk. Slots without an entry are left as they are.
void sum_of_squares_multi(float* sumsq, float* partial, const MultiTensorEntry* entries, int64_t num_entries,
                          const MultiTensorChunk* chunks, int64_t num_chunks, void* stream);
// One AdamW step of every entry with lr, bias corrections and decay (entries with `decayed`) from
// `scalars` and the gradient scale from `status`; does nothing when status->skip is set.
void adamw_multi(const MultiTensorEntry* entries, const MultiTensorChunk* chunks, int64_t num_chunks,
                 const AdamWParams& constants, const DeviceAdamWScalars* scalars,
                 const DeviceStepStatus* status, void* stream);

}  // namespace s6::kernels::cuda
