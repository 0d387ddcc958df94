// The task a config describes (task.* keys), for training, evaluation and bench.
#pragma once
#include <cstdint>
#include <memory>

#include "data/task.h"
#include "trainer/config.h"

namespace s6::trainer {

// The configured task at sequence length seq_len (training uses task.seq_len or the curriculum's
// length, evaluation each of eval.lengths).
std::unique_ptr<data::Task> make_configured_task(const TrainConfig& config, int64_t seq_len);

}  // namespace s6::trainer
