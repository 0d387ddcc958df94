// HDF5 checkpoints: /model/<name>, /optimizer/exp_avg|exp_avg_sq/<name>, /meta attributes, a
// checksum per dataset and one over /meta; built in memory, then written atomically (temp file,
// fsync, rename, fsync of the directory) so a failed write is one POSIX error naming the file.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "layers/mamba.h"

namespace s6::trainer {

// 2: /meta carries the run id (lineage) and a checksum of its attributes. Version 1 files are
// still read (no run id, /meta unchecked).
constexpr int64_t kCheckpointFormatVersion = 2;

// Thrown when a checkpoint cannot be written, or read back and verified; the message names the
// file and, for a corrupt dataset, the dataset.
struct CheckpointError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct CheckpointMeta {
  int64_t step = 0;  // completed optimizer steps; training resumes at this step index
  uint64_t seed = 0;
  int64_t world_size = 1;
  std::string config_yaml;                         // the resolved config of the run that wrote it
  std::map<std::string, std::string> model_shape;  // model.* shape keys -> value text
  int64_t optimizer_step = 0;                      // AdamW's bias-correction counter
  int64_t consecutive_skips = 0;
  std::string run_id;  // the lineage: set at a fresh start, inherited by every resume
  std::string project_version;
};

struct CheckpointContents {
  std::string path;  // the file it was read from ("" when captured from a live run)
  CheckpointMeta meta;
  std::map<std::string, Tensor> model;  // float32 CPU tensors by parameter name
  std::map<std::string, Tensor> exp_avg, exp_avg_sq;
};

// Writes `contents` to `path` atomically. Tensors may live on any device.
void write_checkpoint(const std::string& path, const CheckpointContents& contents);

// Reads and verifies every dataset's checksum; with model_only the optimizer groups are skipped.
CheckpointContents read_checkpoint(const std::string& path, bool model_only = false);

// "checkpoints/step_00001234.h5" naming; list sorted by step (oldest first).
std::string checkpoint_name(int64_t step);
std::vector<std::pair<int64_t, std::string>> list_checkpoints(const std::string& dir);
// A checkpoint file as given, or a run directory's newest checkpoint (in its checkpoints/, or in the
// directory itself). Throws CheckpointError naming the path when there is none.
std::string resolve_checkpoint(const std::string& file_or_run_dir);
// Deletes leftover temp files of interrupted writes; returns how many.
int remove_stale_temp_files(const std::string& dir);
// The run id in a checkpoint's /meta ("" for format 1), or nullopt when it cannot be read.
std::optional<std::string> checkpoint_run_id(const std::string& path);
// Keeps the newest keep_last checkpoints and every step divisible by keep_every (> 0). With a
// run id, only that lineage's checkpoints are counted and deleted; every other file is left alone.
void prune_checkpoints(const std::string& dir, int64_t keep_last, int64_t keep_every,
                       const std::optional<std::string>& run_id = std::nullopt);

}  // namespace s6::trainer
