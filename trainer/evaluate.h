// Evaluation on fixed validation sets (seeded apart from training) at one or several lengths,
// forward only, with batches split so long sequences fit in memory.
#pragma once
#include <cstdint>

#include "layers/mamba.h"
#include "trainer/config.h"

namespace s6::trainer {

struct EvalResult {
  double loss = 0;      // mean over the scored positions
  double accuracy = 0;  // over the task's accuracy positions
  int64_t examples = 0;
};

// Evaluates `config.eval.num_examples` validation examples of the configured task at `length`.
EvalResult evaluate(const MambaLM& model, const TrainConfig& config, int64_t length);

}  // namespace s6::trainer
