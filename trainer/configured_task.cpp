// task.* config keys -> data::TaskParams -> the data library's task.
#include "trainer/configured_task.h"

namespace s6::trainer {

std::unique_ptr<data::Task> make_configured_task(const TrainConfig& config, int64_t seq_len) {
  data::TaskParams params;
  params.vocab = config.task.vocab_size;
  params.seq_len = seq_len;
  params.num_tokens = config.task.num_tokens;
  params.loss_positions = data::parse_loss_positions(config.task.loss_positions);
  return data::make_task(config.task.name, params);
}

}  // namespace s6::trainer
