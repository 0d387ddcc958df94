// The start of a run: the device and the startup table.
#include "trainer/run_start.h"

#include <fmt/format.h>

#include <cstdio>
#include <optional>

#include "core/cuda_runtime.h"
#include "core/log.h"
#include "data/text_task.h"
#include "trainer/checkpoint.h"
#include "trainer/config_diff.h"
#include "trainer/hf_model.h"
#include "trainer/lineage.h"
#include "trainer/resume.h"
#include "trainer/run_files.h"

namespace s6::trainer {

namespace {
std::string megabytes(int64_t bytes) { return fmt::format("{:.2f} MB", static_cast<double>(bytes) / 1e6); }

}  // namespace

Device resolve_device(const std::string& name) {
  if (name == "cpu") return Device::CPU;
  if (name == "cuda") {
    if (!cuda::available())
      throw ConfigError(cuda::compiled_with_cuda()
                            ? "device: cuda was requested but no CUDA device is visible"
                            : "device: cuda was requested but this build has no CUDA support");
    return Device::CUDA;
  }
  return cuda::available() ? Device::CUDA : Device::CPU;
}

void print_startup(const TrainConfig& c, const std::string& config_path, const MambaLM& model, Device device,
                   const data::Task& task) {
  int64_t param_bytes = 0;
  for (const NamedParameter& p : model.parameters()) param_bytes += p.tensor.nbytes();
  const MambaConfig& m = c.model;
  fmt::print("s6 train | {} -> {}\n", config_path, c.run_dir);
  fmt::print("  {:<12} {}\n", "device", device == Device::CUDA ? "cuda" : "cpu");
  fmt::print(
      "  {:<12} {} layers, d_model {}, d_inner {}, d_state {}, dt_rank {}, vocab {} (padded {}), {} / {}\n",
      "model", m.n_layer, m.d_model, m.d_inner(), m.d_state, m.resolved_dt_rank(), m.vocab_size,
      m.padded_vocab(), m.layer == LayerKind::S6 ? "S6" : "S4 (LTI)",
      m.block == BlockKind::Mamba ? "Mamba block" : "no-gate block");
  fmt::print("  {:<12} {}\n", "parameters", model.num_parameters());
#ifdef S6_WITH_NCCL
  fmt::print("  {:<12} on (data parallelism over GPUs)\n", "nccl");
#else
  fmt::print("  {:<12} off: {}\n", "nccl",
             cuda::compiled_with_cuda()
                 ? "built without NCCL, so GPUs cannot train together (README: install libnccl-dev, rebuild)"
                 : "CPU-only build (CPU ranks reduce over TCP)");
#endif
  fmt::print("  {:<12} {}\n", "precision",
             c.train.precision == "bf16"
                 ? "bf16 mixed (bf16 activations and matmuls; fp32 parameters, scan state, "
                   "residual stream, norms and loss)"
                 : "fp32");
  fmt::print("  {:<12} {}: seq_len {}, vocab {}, tokens {}, loss positions {}\n", "task", task.name(),
             task.seq_len(), task.vocab(), c.task.num_tokens, c.task.loss_positions);
  if (auto* text = dynamic_cast<const data::TextTask*>(&task))
    fmt::print("  {:<12} {}\n", "data", text->summary());
  if (!c.task.curriculum_lengths.empty()) {
    std::string phases;
    for (size_t i = 0; i < c.task.curriculum_lengths.size(); ++i)
      phases += fmt::format("{} steps at {}, ", c.task.curriculum_steps[i], c.task.curriculum_lengths[i]);
    fmt::print("  {:<12} {}then length {}\n", "curriculum", phases, task.seq_len());
  }
  fmt::print(
      "  {:<12} AdamW lr {:g} ({}, warmup {}), betas ({:g}, {:g}), eps {:g}, weight decay {:g}, clip {:g}\n",
      "optimizer", c.optim.lr, c.schedule.kind, c.schedule.warmup_steps, c.optim.beta1, c.optim.beta2,
      c.optim.eps, c.optim.weight_decay, c.optim.grad_clip);
  fmt::print("  {:<12} {} steps x batch {} x length {} = {} tokens/step, seed {}\n", "training", c.train.steps,
             c.train.batch_size, task.seq_len(), c.train.batch_size * task.seq_len(), c.seed);
  fmt::print("  {:<12} parameters {} | gradients {} | AdamW moments {}\n", "memory", megabytes(param_bytes),
             megabytes(param_bytes), megabytes(2 * param_bytes));
  std::fflush(stdout);
}

StartState load_start_state(const TrainConfig& config, const RunOptions& options, MambaLM& model,
                            AdamW& optimizer, const std::string& checkpoint_dir) {
  const bool lead = options.rank == 0;
  if (lead)
    if (int n = remove_stale_temp_files(checkpoint_dir))
      log::warn("removed {} stale checkpoint temp file(s)", n);
  StartState start;
  std::optional<CheckpointContents> resumed = find_resume_checkpoint(config, options.resume, model);
  if (resumed) {
    check_resume_config(*resumed, config, options.allow_config_change);
    restore(*resumed, model, &optimizer);
    start.step = resumed->meta.step;
    start.consecutive_skips = resumed->meta.consecutive_skips;
  } else if (!config.init_from.empty() && is_hf_folder(config.init_from)) {
    init_from_hf_folder(config.init_from, config.model, model);
  } else if (!config.init_from.empty()) {
    CheckpointContents init = read_checkpoint(config.init_from, /*model_only=*/true);
    check_model_shape(init.meta.model_shape, config, config.init_from, /*for_init=*/true);
    restore(init, model, nullptr);
    log::info("init.from: weights from {} (step {}), fresh optimizer", config.init_from, init.meta.step);
  }
  start.run_id = resumed ? resumed->meta.run_id : new_run_id();
  if (lead) {
    // Nothing in run.dir has been changed before this point: a refused start leaves it as it was.
    settle_lineage(checkpoint_dir, config.run_dir, resumed ? &*resumed : nullptr, options.resume,
                   options.overwrite);
    create_run_files(config, checkpoint_dir);
  }
  return start;
}

}  // namespace s6::trainer
