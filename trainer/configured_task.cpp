// task.* and data.* config keys -> data::TaskParams -> the data library's task.
#include "trainer/configured_task.h"

#include "data/text_task.h"

namespace s6::trainer {

std::unique_ptr<data::Task> make_configured_task(const TrainConfig& config, int64_t seq_len) {
  data::TaskParams params;
  params.vocab = config.task.vocab_size;
  params.seq_len = seq_len;
  params.num_tokens = config.task.num_tokens;
  params.loss_positions = data::parse_loss_positions(config.task.loss_positions);
  if (!data::is_text_task(config.task.name)) return data::make_task(config.task.name, params);
  const DataConfig& d = config.data;
  try {
    return data::make_text_task(config.task.name, params,
                                {d.train_glob, d.val_glob, d.val_fraction, d.format, d.dtype});
  } catch (const data::DataError& e) {
    throw ConfigError(e.what());  // the user's files or their keys: exit code 2
  }
}

}  // namespace s6::trainer
