// The start of a run: the device, the run directory, the startup table and the state training starts from.
#pragma once
#include <cstdint>
#include <string>

#include "data/task.h"
#include "layers/mamba.h"
#include "trainer/config.h"
#include "trainer/optimizer.h"

namespace s6::trainer {

// The device the `device` key selects: cpu, cuda (ConfigError when none is visible), or auto
// (CUDA when a GPU is visible).
Device resolve_device(const std::string& name);

// Creates run.dir/checkpoints, writes the resolved config.yaml there and removes temp files left
// by an interrupted checkpoint write.
void prepare_run_dir(const TrainConfig& config);

// The table of what is about to run (device, model, task, optimizer, sizes), on stdout.
void print_startup(const TrainConfig& config, const std::string& config_path, const MambaLM& model,
                   Device device, const data::Task& task);

struct StartState {
  int64_t step = 0;               // steps already done
  int64_t consecutive_skips = 0;  // non-finite steps skipped in a row up to there
};
// Resumes model and optimizer per `resume` (auto | never | a checkpoint path; see
// find_resume_checkpoint), else takes init.from's weights with a fresh optimizer, else leaves the
// fresh model as it is.
StartState load_start_state(const TrainConfig& config, const std::string& resume, MambaLM& model,
                            AdamW& optimizer);

}  // namespace s6::trainer
