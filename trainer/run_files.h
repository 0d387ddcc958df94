// The files a run starts with in run.dir: checkpoints/ and config.yaml, every failure an IoError
// naming the path and the OS error.
#pragma once
#include <string>

#include "trainer/config.h"

namespace s6::trainer {

// Creates checkpoint_dir and writes run.dir/config.yaml (the resolved config) through a temp file.
void create_run_files(const TrainConfig& config, const std::string& checkpoint_dir);

}  // namespace s6::trainer
