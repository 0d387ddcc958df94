// The training configuration: one schema for model, task, optimizer, schedule, training,
// evaluation, checkpointing and run settings, loaded from YAML plus dotted key=value overrides.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "layers/mamba_config.h"

namespace s6::trainer {

// Raised for every user-facing configuration problem; `what()` lists every problem found, one per
// line, each naming the YAML path (e.g. "optim.lr: expected a number > 0, got -1").
struct ConfigError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct TaskConfig {
  std::string name = "selective_copying";  // copying | selective_copying | induction_heads | tokens | bytes
  int64_t vocab_size = 16;
  int64_t seq_len = 4096;
  int64_t num_tokens = 16;
  std::string loss_positions = "last";  // last | all (induction heads)
  // Length curriculum: train curriculum_steps[i] steps at curriculum_lengths[i], in order, then
  // the rest of train.steps at seq_len (empty = seq_len throughout). Long copying tasks sit at
  // chance for a long time when trained at full length from the start (README, Results).
  std::vector<int64_t> curriculum_lengths;
  std::vector<int64_t> curriculum_steps;
};

// data.*: the files of the tokens and bytes tasks (data/text_task.h).
struct DataConfig {
  std::string train_glob;        // e.g. data/fineweb_train_*.bin; '**' matches any directories
  std::string val_glob;          // "" = hold out the last val_fraction of the training stream
  double val_fraction = 0;       // in (0, 1) when val_glob is ""
  std::string format = "llmc";   // tokens: llmc (256 x int32 header) | raw (headerless)
  std::string dtype = "uint16";  // raw: uint16 | uint32
};

struct OptimConfig {
  double lr = 1e-3;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double weight_decay = 0.0;
  double grad_clip = 1.0;  // 0 = no clipping
};

struct ScheduleConfig {
  std::string kind = "constant";  // constant | cosine (linear warmup, cosine decay to min_lr)
  int64_t warmup_steps = 0;
  double min_lr = 1e-5;
};

struct TrainSection {
  int64_t steps = 1000;
  int64_t batch_size = 64;  // global batch (split across ranks)
  int64_t log_every = 10;
  std::string on_nonfinite = "skip";  // skip | halt
  int64_t max_consecutive_skips = 10;
  double max_weight_abs = 1e6;      // a checkpoint with a larger weight is refused (0 = no bound)
  double max_minutes = 0;           // 0 = no limit
  std::string precision = "fp32";   // fp32 | bf16 (mixed: bf16 activations, fp32 parameters)
  std::string cuda_graph = "auto";  // auto | on | off: replay the step as one CUDA graph
};

struct EvalConfig {
  int64_t every = 500;           // 0 = only at the end
  std::vector<int64_t> lengths;  // empty = the training seq_len
  int64_t num_examples = 256;    // per length
  int64_t batch_size = 64;       // examples per forward (split further if memory needs)
};

struct CheckpointConfig {
  int64_t every = 0;  // 0 = only at the end
  int64_t keep_last = 3;
  int64_t keep_every = 0;  // also keep every M-th step's checkpoint (0 = none)
};

struct DistConfig {
  // Gradients are all-reduced in buckets of about this many MB of fp32 (smaller buckets start
  // communicating sooner during backward, larger ones make fewer collectives). Part of the config
  // every rank must agree on, since different layouts would pair different collectives.
  double bucket_mb = 25.0;
};

struct TrainConfig {
  uint64_t seed = 1;
  std::string device = "auto";  // auto | cpu | cuda
  MambaConfig model;
  TaskConfig task;
  DataConfig data;
  OptimConfig optim;
  ScheduleConfig schedule;
  TrainSection train;
  EvalConfig eval;
  CheckpointConfig checkpoint;
  DistConfig dist;
  std::string run_dir;    // run.dir; default runs/<config file stem>
  std::string init_from;  // init.from: checkpoint whose /model initializes a new run
};

// Reads `path`, applies overrides ("a.b=value", value parsed as YAML), validates everything and
// returns the resolved config. A run's config must name its task: task.name is required here. Throws
// ConfigError listing every problem (unknown keys with a "did you mean", duplicate keys, wrong types,
// out-of-range values, cross-field checks). world_size is used for cross-field checks (batch divisible by
// ranks).
TrainConfig load_config(const std::string& path, const std::vector<std::string>& overrides,
                        int64_t world_size = 1);

// load_config on YAML text already in memory; `source` names it in messages (and gives the
// default run.dir, runs/<stem of source>). task.name may be left out (the default task).
TrainConfig load_config_text(const std::string& text, const std::string& source,
                             const std::vector<std::string>& overrides, int64_t world_size = 1);

// The resolved config as YAML (every key, defaults filled in), loadable again by load_config.
std::string to_yaml(const TrainConfig& config);

// The sequence length that training step `step` (0-based) uses under the length curriculum.
int64_t training_length(const TrainConfig& config, int64_t step);

// The model's compute (activation) dtype for train.precision; parameters are float32 either way.
DType compute_dtype(const TrainConfig& config);

// Keys whose change alters the model's shape (checkpoint compatibility), as "model.d_model" etc.
std::vector<std::string> model_shape_keys();

}  // namespace s6::trainer
