// Checkpoint lineage: every checkpoint names the run it belongs to (a run id made at a fresh start
// and inherited by every resume), so a start never silently mixes with, or prunes, another run.
#pragma once
#include <string>

#include "trainer/checkpoint.h"

namespace s6::trainer {

// A fresh run id (random, 16 hex digits).
std::string new_run_id();

// Before anything is written: a fresh start (resumed == nullptr) over checkpoints already in
// checkpoint_dir, or a `--resume PATH` that would leave newer checkpoints behind it, throws
// ConfigError naming run_dir and the files, unless overwrite, in which case those files are
// deleted (each logged). `--resume auto` only ever resumes the newest usable checkpoint, so it
// leaves nothing newer but unusable files, which are kept.
void settle_lineage(const std::string& checkpoint_dir, const std::string& run_dir,
                    const CheckpointContents* resumed, const std::string& mode, bool overwrite);

}  // namespace s6::trainer
