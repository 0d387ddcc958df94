// Evaluation on fixed validation sets (seeded apart from training) at one or several lengths,
// forward only, with batches split so long sequences fit in memory.
#pragma once
#include <cstdint>

#include <memory>

#include "data/task.h"
#include "layers/mamba.h"
#include "trainer/config.h"

namespace s6::trainer {

struct EvalResult {
  double loss = 0;      // mean over the scored positions
  double accuracy = 0;  // over the task's accuracy positions
  int64_t examples = 0;
  bool interrupted = false;  // a stop signal arrived: stopped within one batch, the result is partial
};

class DataParallel;

// The configured task at sequence length seq_len (training uses task.seq_len, evaluation others).
std::unique_ptr<data::Task> make_configured_task(const TrainConfig& config, int64_t seq_len);

// Validation batch j of `batch_size` examples (Task::sample's, rank 0) for a model on `device`:
// inputs and device_targets there, targets and eval_targets on the host. On CUDA the batch is
// generated on the device (the same bits) and only the targets come back to the host.
struct EvalBatch {
  Tensor inputs, device_targets;  // (batch, length) on `device`; device_targets flat
  Tensor targets, eval_targets;   // (batch, length) int32 on the host
};
EvalBatch eval_batch(const data::Task& task, int64_t batch_size, uint64_t seed, uint64_t j, Device device);

// Evaluates `config.eval.num_examples` validation examples of the configured task at `length`.
// With data parallelism the forward passes are dealt out across ranks and the sums combined, so
// every rank returns the same result. A stop signal ends it after the current batch (on every rank,
// through the final reduction) with `interrupted` set.
EvalResult evaluate(const MambaLM& model, const TrainConfig& config, int64_t length,
                    DataParallel* data_parallel = nullptr);

}  // namespace s6::trainer
