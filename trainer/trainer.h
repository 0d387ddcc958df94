// One training run: builds the model, task and optimizer from a TrainConfig, trains with periodic
// logging and evaluation, and reports how it ended as an exit code (trainer/exit_codes.h).
#pragma once
#include <string>

#include "core/tensor.h"
#include "trainer/config.h"

namespace s6::trainer {

class DataParallel;

struct RunOptions {
  std::string config_path;           // for the startup table
  std::string resume = "auto";       // auto | never | <checkpoint path>
  bool overwrite = false;            // --overwrite: delete checkpoints a fresh start would mix with
  bool allow_config_change = false;  // --allow-config-change: resume across data/seed/model keys
  int rank = 0;
  int world_size = 1;
  DataParallel* data_parallel = nullptr;  // set when launched as one rank of several (or --nproc)
};

int run_training(const TrainConfig& config, const RunOptions& options);

}  // namespace s6::trainer
