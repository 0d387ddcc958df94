// Evaluation on fixed validation sets (seeded apart from training) at one or several lengths,
// forward only, with batches split so long sequences fit in memory.
#pragma once
#include <cmath>
#include <cstdint>

#include <memory>
#include <string>

#include "data/task.h"
#include "layers/mamba.h"
#include "trainer/config.h"

namespace s6::trainer {

struct EvalResult {
  double loss = 0;      // mean over the scored positions
  double accuracy = 0;  // over the task's accuracy positions
  int64_t examples = 0;
  double perplexity = NAN;     // exp(loss): tokens and bytes tasks
  double bits_per_byte = NAN;  // loss / ln 2: bytes task

  bool interrupted = false;  // a stop signal arrived: stopped within one batch, the result is partial
};

// ", perplexity P" (and ", B bits/byte") when the result has them, else "": for the log line.
std::string language_model_figures(const EvalResult& r);

class DataParallel;

// Validation batch j of `batch_size` examples (Task::sample's, rank 0) for a model on `device`:
// inputs and device_targets there, targets and eval_targets on the host. On CUDA the batch is
// generated on the device (the same bits) and only the targets come back to the host, except for
// file tasks, which sample on the host and copy.
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
