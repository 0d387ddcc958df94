// The training step, written once: batch, forward, loss, backward (with the data-parallel gradient
// averaging), gradient norm, clip, the non-finite skip decision and the AdamW update. The training
// loop runs it, a CUDA graph records it (single GPU), and `bench` times it.
#pragma once
#include <memory>
#include <string>

#include "autograd/tape.h"
#include "data/task.h"
#include "layers/mamba.h"
#include "trainer/config.h"
#include "trainer/optimizer.h"

namespace s6::trainer {

class DataParallel;
class StepGraph;
class StreamScope;

// Batches of `batch_size` examples of `task` for (seed, rank): batch k is Task::sample_into's
// batch k, generated on the device when the model is on CUDA (the same bits).
struct StepData {
  const data::Task* task = nullptr;
  int64_t batch_size = 0;
  uint64_t seed = 0;
  uint32_t rank = 0;
};

// Decisions every rank must take together; the step ORs them across ranks in the reduction that
// averages the loss (no extra collective).
struct SharedFlags {
  bool stop = false;
  bool out_of_time = false;
};

struct StepResult {
  double loss = 0;        // mean over ranks
  GradientNorm norm;      // of the averaged gradients; first_nonfinite named when skipped
  bool skipped = false;   // the loss or the norm is not finite: no update, step count unchanged
  bool replayed = false;  // ran as the captured CUDA graph
};

// With train.cuda_graph auto or on, a single-GPU step runs eagerly once (so every handle,
// workspace and kernel module exists), is captured on its second call and replayed after that:
// the same forward and backward, with the batch index and AdamW's scalars read from device memory
// and the norm, clip and skip decided on the device by kernels that compute what the eager step
// computes on the host, so the losses and weights are bitwise the eager ones. A failed capture
// under `auto` is reported once and the step stays eager; under `on` it throws.
class TrainStep {
 public:
  // model, optimizer, config, task and dp must outlive the step.
  TrainStep(MambaLM& model, AdamW& optimizer, const TrainConfig& config, const StepData& data,
            DataParallel* dp = nullptr);
  ~TrainStep();
  TrainStep(const TrainStep&) = delete;
  TrainStep& operator=(const TrainStep&) = delete;

  // Step on batch `index` at learning rate lr. On a non-finite loss or norm nothing is updated
  // (the caller decides whether to skip or halt). An eager step leaves no gradients behind; the
  // graph keeps its gradient buffers until it is dropped (then they are cleared).
  StepResult run(uint64_t index, double lr, SharedFlags* flags = nullptr);
  // Accuracy of the latest step's logits on its batch (made on the host here when the step made
  // it on the device).
  data::Accuracy accuracy();
  // A new task for the following steps (the next phase of a length curriculum); a captured graph
  // holds the old one, so the next step runs eagerly and the one after captures again.
  void set_task(const data::Task* task);
  // Time spent generating batches on the host.
  double host_data_seconds() const { return host_data_seconds_; }

 private:
  friend class StepGraph;
  // The parts the eager step and the captured graph share.
  const data::Batch& sample_on_host(uint64_t index);
  // File tasks (tokens, bytes) have no device generator: the host samples batch `index` and copies
  // it into a device batch (the graph's, allocated before its capture, or the eager step's).
  void copy_host_batch(uint64_t index, data::Batch& device_batch);
  Tensor forward_backward(const Tensor& inputs, const Tensor& flat_targets,
                          const autograd::LeafReadyFn& on_ready);
  StepResult run_eager(uint64_t index, double lr, SharedFlags* flags);

  MambaLM& model_;
  AdamW& optimizer_;
  const TrainConfig& config_;
  StepData data_;
  DataParallel* dp_;
  Device device_;
  bool use_graph_;  // train.cuda_graph auto|on, a CUDA model, one process
  bool graph_failed_ = false;
  std::unique_ptr<StreamScope> stream_;  // a graph is captured on a stream of its own
  std::unique_ptr<StepGraph> graph_;
  data::Batch host_batch_;
  int64_t host_batch_index_ = -1;  // the batch host_batch_ holds, -1 none
  data::Batch device_batch_;       // CUDA eager steps generate here
  Tensor device_index_;            // its batch index (int64 on the device)
  uint64_t last_index_ = 0;
  Tensor logits_;  // (batch * length, vocab) of the latest step
  double host_data_seconds_ = 0;
};

// A non-default stream made current for the scope (when enabled), after the work queued on the
// previous stream has finished (the legacy default stream cannot be captured); at exit it drains
// the new stream and restores the previous one.
class StreamScope {
 public:
  explicit StreamScope(bool enabled);
  ~StreamScope();
  StreamScope(const StreamScope&) = delete;
  StreamScope& operator=(const StreamScope&) = delete;

 private:
  void* previous_ = nullptr;
  void* stream_ = nullptr;
};

}  // namespace s6::trainer
