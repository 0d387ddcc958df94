// Between the trainer and its checkpoints: which checkpoint to resume from, whether its model
// shape matches the config, and moving state in and out of the model and optimizer.
#pragma once
#include <optional>
#include <string>

#include "trainer/checkpoint.h"
#include "trainer/config.h"
#include "trainer/optimizer.h"

namespace s6::trainer {

// mode "never": nothing. "auto": the newest checkpoint in run_dir/checkpoints that verifies and
// fits `model` (any that fails to load, misses a dataset or holds one of another shape is reported
// by name with the reason, and the previous one tried); none -> nullopt. Otherwise a path that
// must load: failures throw CheckpointError. A /meta model shape other than the config's throws
// ConfigError naming the keys.
std::optional<CheckpointContents> find_resume_checkpoint(const TrainConfig& config, const std::string& mode,
                                                         const MambaLM& model);

// Throws CheckpointError (naming the file and dataset) unless `contents` holds exactly the model's
// parameters with their shapes (and, with_optimizer, both AdamW moments of each).
void check_fits_model(const CheckpointContents& contents, const MambaLM& model, bool with_optimizer);

// The model.* shape keys of a config and their value text.
std::map<std::string, std::string> model_shape_of(const TrainConfig& config);
// Throws ConfigError naming every shape key whose value differs (and, for init.from, saying to
// match them rather than suggesting init.from).
void check_model_shape(const std::map<std::string, std::string>& saved, const TrainConfig& config,
                       const std::string& source, bool for_init = false);

CheckpointContents capture(const MambaLM& model, AdamW& optimizer, const TrainConfig& config, int64_t step,
                           int64_t world_size, int64_t consecutive_skips);
// Copies weights (and optimizer state unless model_only) into the live tensors.
void restore(const CheckpointContents& contents, MambaLM& model, AdamW* optimizer);

// Drops metrics.jsonl lines whose "step" is greater than `step` (the curve then has no duplicates).
void truncate_metrics(const std::string& path, int64_t step);

}  // namespace s6::trainer
