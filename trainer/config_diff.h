// Resuming with a changed config: every changed key is reported; optimizer, schedule, logging,
// evaluation and checkpoint keys are allowed, data, seed and model keys refused unless asked.
#pragma once
#include <string>

#include "trainer/checkpoint.h"
#include "trainer/config.h"

namespace s6::trainer {

// Compares the config `resumed` was written with against `config`, key by key: allowed changes
// are logged; data (task.*, train.batch_size), seed and model keys throw ConfigError listing each
// unless allow_change (then they are logged as warnings). Also throws ConfigError when
// train.steps is below the checkpoint's step. Keys the checkpoint's config lacks (added by a
// later version) are not compared.
void check_resume_config(const CheckpointContents& resumed, const TrainConfig& config, bool allow_change);

}  // namespace s6::trainer
