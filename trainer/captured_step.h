// The single-GPU training step as one CUDA graph: the batch's generation (on the device, the
// same bits as the host generator), forward, loss, backward, gradient norm, clip and AdamW are
// captured once (on the second step; the first runs eagerly so every handle, workspace and kernel
// module exists) and replayed every step after. Replay runs the very kernels the eager step
// launches, with the per-step values (batch index, lr, bias corrections) read from device
// buffers, so its losses and weights are bitwise those of the eager loop on host-generated
// batches. The skip on a non-finite loss or norm is decided on the device (the update kernels
// return early) and reported back. File tasks (tokens, bytes) have no device generator: their
// batch is sampled on the host and copied into the graph's batch buffers before each replay.
#pragma once
#include <memory>
#include <string>

#include "data/task.h"
#include "layers/mamba.h"
#include "trainer/config.h"
#include "trainer/optimizer.h"

namespace s6::trainer {

struct CapturedOutcome {
  double loss = 0;
  GradientNorm norm;  // first_nonfinite is named only when the step was skipped
  bool skipped = false;
};

class CapturedStep {
 public:
  virtual ~CapturedStep() = default;
  // One step on batch `batch_index` of the task (generated inside the graph) with learning rate
  // lr; the optimizer's step count advances unless the step was skipped. The first call captures
  // the graph (throws on failure; the caller may fall back to the eager loop).
  virtual CapturedOutcome run(uint64_t batch_index, double lr) = 0;
  virtual Tensor logits() const = 0;  // of the latest replay, (batch * length, vocab)
};

// Batches of `batch_size` examples of `task` for (seed, rank), as Task::sample_into makes them.
struct CapturedData {
  const data::Task* task = nullptr;
  int64_t batch_size = 0;
  uint64_t seed = 0;
  uint32_t rank = 0;
};

// nullptr when this build has no CUDA. The model, optimizer and task must outlive the step.
std::unique_ptr<CapturedStep> make_captured_step(MambaLM& model, AdamW& optimizer, const TrainConfig& config,
                                                 const CapturedData& data);

}  // namespace s6::trainer
