// The single-GPU training step as one CUDA graph: forward, loss, backward, gradient norm, clip and
// AdamW are captured once (on the second step; the first runs eagerly so every handle, workspace
// and kernel module exists) and replayed every step after. Replay runs the very kernels the eager
// step launches, with the per-step values (batch, lr, bias corrections) read from device buffers,
// so its losses and weights are bitwise those of the eager loop. The skip on a non-finite loss or
// norm is decided on the device (the update kernels return early) and reported back.
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
  // One step on `batch` (host tensors) with learning rate lr; the optimizer's step count advances
  // unless the step was skipped. The first call captures the graph (throws on failure; the
  // caller may fall back to the eager loop).
  virtual CapturedOutcome run(const data::Batch& batch, double lr) = 0;
  virtual Tensor logits() const = 0;  // of the latest replay, (batch * length, vocab)
};

// nullptr when this build has no CUDA. The model and optimizer must outlive the step.
std::unique_ptr<CapturedStep> make_captured_step(MambaLM& model, AdamW& optimizer, const TrainConfig& config);

}  // namespace s6::trainer
