// Helpers shared by the tests that train: configs, run directories, metrics and checkpoints,
// and `train` as a child process.
#pragma once
#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "trainer/config.h"

namespace s6::testing {

namespace fs = std::filesystem;

// An empty directory under the temp folder, unique to this test process.
fs::path fresh_dir(const std::string& name);
// A tiny copying task that a 2-layer model learns within a few hundred CPU steps.
trainer::TrainConfig tiny_config(const fs::path& dir, int64_t steps);
// "step:loss" of every training line of run_dir/metrics.jsonl, as written (exact text).
std::vector<std::string> train_losses(const fs::path& run_dir);
// Bitwise comparison of every model and optimizer dataset of two checkpoints (CHECKs).
void check_identical(const std::string& a, const std::string& b);
std::string final_checkpoint(const fs::path& run_dir);
void write_yaml(const fs::path& file, const trainer::TrainConfig& c);
// Runs build/train on a config file with `env` ("KEY=value", replacing inherited values) added
// to this process's environment, stdout and stderr into `log` (discarded when empty); returns
// the child pid (not waited for).
pid_t spawn_train(const fs::path& config, const std::vector<std::string>& extra,
                  const std::vector<std::string>& env = {}, const fs::path& log = {});
// The child's exit code, or 128 + signal.
int wait_exit(pid_t pid);

}  // namespace s6::testing
