// The start of a run: the device, the startup table and the state training starts from.
#pragma once
#include <cstdint>
#include <string>

#include "data/task.h"
#include "layers/mamba.h"
#include "trainer/config.h"
#include "trainer/optimizer.h"
#include "trainer/trainer.h"

namespace s6::trainer {

// The device the `device` key selects: cpu, cuda (ConfigError when none is visible), or auto
// (CUDA when a GPU is visible).
Device resolve_device(const std::string& name);

// The table of what is about to run (device, model, task, optimizer, sizes), on stdout.
void print_startup(const TrainConfig& config, const std::string& config_path, const MambaLM& model,
                   Device device, const data::Task& task);

struct StartState {
  int64_t step = 0;               // steps already done
  int64_t consecutive_skips = 0;  // non-finite steps skipped in a row up to there
  std::string run_id;             // the checkpoint lineage this run continues or starts
};
// Resumes model and optimizer per options.resume (refusing config changes the options do not
// allow), else takes init.from's weights (an s6 checkpoint or a Hugging Face folder) with a fresh
// optimizer, else keeps the fresh model. On rank 0 it then settles run.dir's lineage and writes the
// run's files: nothing in run.dir changes before a start is accepted.
StartState load_start_state(const TrainConfig& config, const RunOptions& options, MambaLM& model,
                            AdamW& optimizer, const std::string& checkpoint_dir);

}  // namespace s6::trainer
