// The training loop: the schedule, the cadence of logging, evaluation and checkpoints, the
// curriculum, and stopping on signals, time or non-finite steps; the step is trainer/train_step.h.
#include "trainer/trainer.h"

#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <optional>

#include "autograd/profile.h"
#include "core/cuda_runtime.h"
#include "core/log.h"
#include "data/task.h"
#include "layers/mamba.h"
#include "trainer/configured_task.h"
#include "trainer/data_parallel.h"
#include "trainer/evaluate.h"
#include "trainer/exit_codes.h"
#include "trainer/fault_injection.h"
#include "trainer/memory_estimate.h"
#include "trainer/metrics.h"
#include "trainer/optimizer.h"
#include "trainer/resume.h"
#include "trainer/run_lock.h"
#include "trainer/run_start.h"
#include "trainer/signals.h"
#include "trainer/state_check.h"
#include "trainer/train_step.h"

namespace s6::trainer {

namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace

int run_training(const TrainConfig& config, const RunOptions& options) {
  install_stop_handlers();
  const Device device = resolve_device(config.device);
  check_memory(config, options.world_size, device == Device::CPU);
  DataParallel* dp = options.data_parallel;
  if (dp) dp->set_bucket_mb(config.dist.bucket_mb);
  const bool lead = options.rank == 0;  // rank 0 logs, writes metrics and checkpoints
  // Ranks of one run share rank 0's lock: only rank 0 writes into run.dir.
  std::optional<RunDirLock> run_lock;
  if (lead) run_lock.emplace(config.run_dir);
  throw_if_stop_requested("start-up");

  std::unique_ptr<data::Task> task = make_configured_task(config, config.task.seq_len);

  MambaLM model(config.model, config.seed, DType::Float32, device, compute_dtype(config));
  AdamW optimizer(model.parameters(), config.optim);
  if (lead) print_startup(config, options.config_path, model, device, *task);
  throw_if_stop_requested("start-up");

  const std::string checkpoint_dir = (fs::path(config.run_dir) / "checkpoints").string();
  const std::string metrics_path = (fs::path(config.run_dir) / "metrics.jsonl").string();
  const StartState start = load_start_state(config, options, model, optimizer, checkpoint_dir);
  const int64_t start_step = start.step;
  int64_t consecutive_skips = start.consecutive_skips;
  const std::string& run_id = start.run_id;
  if (dp) dp->check_agreement(to_yaml(config), start_step);
  if (lead) truncate_metrics(metrics_path, start_step);  // a fresh start (step 0) begins a new curve
  int64_t last_saved = start_step;
  Progress progress(config.train.steps, start_step);
  // Every rank holds the same state and checks it; rank 0 writes it. Returns "" when saved, else
  // why the state is not fit to be saved (it is then not written).
  auto save = [&](int64_t step) -> std::string {
    CheckpointContents state = capture(model, optimizer, config, step, options.world_size, consecutive_skips);
    state.meta.run_id = run_id;
    if (std::string why = unsaveable_reason(state, config.train.max_weight_abs); !why.empty()) return why;
    if (lead) {
      std::string path = (fs::path(checkpoint_dir) / checkpoint_name(step)).string();
      write_checkpoint(path, state);
      prune_checkpoints(checkpoint_dir, config.checkpoint.keep_last, config.checkpoint.keep_every, run_id);
    }
    if (dp) dp->barrier("checkpoint");
    last_saved = step;
    autograd::profile::mark("step", "checkpoint");
    return "";
  };
  // A state that may not be saved ends the run (exit 3): resuming would start from it again.
  auto refuse_state = [&](int64_t step, const std::string& why) {
    progress.finish();
    if (lead)
      log::error("step {}: not saving a checkpoint: {}; halting, --resume auto continues from step {}", step,
                 why, last_saved);
    return kExitNonFinite;
  };
  throw_if_stop_requested("start-up");
  const auto run_start = Clock::now();
  auto local_flags = [&] {
    return SharedFlags{stop_requested(), config.train.max_minutes > 0 &&
                                             seconds_since(run_start) > 60.0 * config.train.max_minutes};
  };

  MetricsWriter metrics(lead ? metrics_path : "");
  const int64_t batch = config.train.batch_size / options.world_size;
  int64_t length = training_length(config, start_step);
  if (length != task->seq_len()) task = make_configured_task(config, length);
  std::vector<int64_t> eval_lengths = config.eval.lengths;
  if (eval_lengths.empty()) eval_lengths.push_back(config.task.seq_len);

  auto run_eval = [&](int64_t step) {  // false when a stop signal cut it short
    for (int64_t len : eval_lengths) {
      auto t0 = Clock::now();
      EvalResult r = evaluate(model, config, len, dp);
      if (r.interrupted) {
        progress.finish();
        if (lead)
          log::warn("eval step {} length {}: stopped by signal {} after {} examples; not recorded", step, len,
                    stop_signal(), r.examples);
        return false;
      }
      metrics.write(EvalRecord{step, len, r.loss, r.accuracy, r.perplexity, r.bits_per_byte});
      progress.finish();
      if (lead)
        log::info("eval step {} length {}: loss {:.4f}, accuracy {:.2f}%{} ({} examples, {:.1f} s)", step, len,
                  r.loss, 100.0 * r.accuracy, language_model_figures(r), r.examples, seconds_since(t0));
    }
    return true;
  };

  TrainStep train_step(model, optimizer, config,
                       {task.get(), batch, config.seed, static_cast<uint32_t>(options.rank)}, dp);
  auto window_start = Clock::now();
  int64_t window_steps = 0;
  for (int64_t step = start_step; step < config.train.steps; ++step) {
    if (const int64_t phase_length = training_length(config, step); phase_length != length) {
      length = phase_length;  // the next phase of the length curriculum
      task = make_configured_task(config, length);
      train_step.set_task(task.get());
      if (lead) log::info("curriculum: training at length {} from step {}", length, step + 1);
      window_start = Clock::now();  // ms/step and tokens/s restart with the new shape
      window_steps = 0;
    }
    const double lr = learning_rate(config.optim, config.schedule, config.train.steps, step);
    SharedFlags flags = local_flags();  // agreed across ranks inside the step
    const StepResult r = train_step.run(static_cast<uint64_t>(step), lr, &flags);
    const int64_t done = step + 1;
    if (r.skipped) {
      std::string culprit = !std::isfinite(r.loss) ? "the loss" : "the gradient of " + r.norm.first_nonfinite;
      if (config.train.on_nonfinite == "halt") {
        progress.finish();
        if (lead)
          log::error("step {}: {} is not finite (loss {}, grad norm {}); halting as train.on_nonfinite=halt",
                     done, culprit, r.loss, r.norm.norm);
        metrics.write_event(done, "halt_nonfinite", culprit);
        return kExitNonFinite;
      }
      ++consecutive_skips;
      metrics.write_event(done, "skip_nonfinite", culprit);
      if (lead)
        log::warn("step {}: {} is not finite; update skipped ({} in a row)", done, culprit, consecutive_skips);
      if (consecutive_skips > config.train.max_consecutive_skips) {
        log::error("halting: {} consecutive non-finite steps exceed train.max_consecutive_skips={}",
                   consecutive_skips, config.train.max_consecutive_skips);
        return kExitNonFinite;
      }
      // A stop is honoured in a streak too: the state is the last update's, saved at this step
      // with the streak's count so that a resume continues exactly as the run would have.
      if (!dp) flags = local_flags();
      if ((flags.stop || flags.out_of_time) && done < config.train.steps) {
        progress.finish();
        const std::string why = last_saved == done ? "" : save(done);
        if (lead)
          log::info("stopping at step {} ({}) during a streak of skipped steps; {}", done,
                    flags.out_of_time ? "train.max_minutes reached" : fmt::format("signal {}", stop_signal()),
                    why.empty() ? "checkpoint saved, resume with the same command"
                                : fmt::format("no checkpoint saved ({}), --resume auto continues from step {}",
                                              why, last_saved));
        return kExitInterrupted;
      }
      continue;  // a skipped step is not checkpointed otherwise: its update never happened
    }
    consecutive_skips = 0;
    ++window_steps;

    if (done % config.train.log_every == 0 || done == config.train.steps) {
      if (device == Device::CUDA) cuda::synchronize();
      const double ms = 1e3 * seconds_since(window_start) / std::max<int64_t>(window_steps, 1);
      const data::Accuracy acc = train_step.accuracy();  // after the window's time
      TrainRecord rec{done,
                      r.loss,
                      acc.fraction(),
                      lr,
                      r.norm.norm,
                      ms,
                      static_cast<double>(config.train.batch_size * length) / (ms / 1e3)};
      metrics.write(rec);
      if (lead) progress.update(rec);
      window_start = Clock::now();
      window_steps = 0;
      autograd::profile::mark("step", "logging + accuracy");
    }
    bool eval_stopped = false;
    if (config.eval.every > 0 && done % config.eval.every == 0 && done != config.train.steps) {
      eval_stopped = !run_eval(done);
      window_start = Clock::now();
      autograd::profile::restart_clock();
    }
    if (config.checkpoint.every > 0 && done % config.checkpoint.every == 0 && !eval_stopped)
      if (std::string why = save(done); !why.empty()) return refuse_state(done, why);
    fault_injection::after_step(done);
    if (!dp) flags = local_flags();           // a single process also sees a signal from this step
    flags.stop = flags.stop || eval_stopped;  // every rank saw the interrupted evaluation
    if ((flags.stop || flags.out_of_time) && done < config.train.steps) {
      progress.finish();
      if (last_saved != done)
        if (std::string why = save(done); !why.empty()) return refuse_state(done, why);
      if (lead)
        log::info("stopping at step {} ({}); checkpoint {} saved, resume with the same command", done,
                  flags.out_of_time ? "train.max_minutes reached" : fmt::format("signal {}", stop_signal()),
                  (fs::path(checkpoint_dir) / checkpoint_name(done)).string());
      if (lead && autograd::profile::enabled()) fmt::print("{}", autograd::profile::report());
      if (flags.out_of_time && !flags.stop) run_eval(done);  // a time box still reports its result
      return kExitInterrupted;
    }
  }
  progress.finish();
  if (device == Device::CUDA) cuda::synchronize();
  const double train_seconds = seconds_since(run_start);
  if (lead && start_step >= config.train.steps)
    log::info("nothing to train: the run is at step {} of train.steps {}; evaluating only", start_step,
              config.train.steps);
  else if (lead)
    log::info("trained steps {}..{} in {:.1f} s; data generation on the host took {:.3f} s ({:.2f}% of it)",
              start_step + 1, config.train.steps, train_seconds, train_step.host_data_seconds(),
              100.0 * train_step.host_data_seconds() / std::max(train_seconds, 1e-9));
  if (last_saved != config.train.steps)
    if (std::string why = save(config.train.steps); !why.empty()) return refuse_state(config.train.steps, why);
  if (lead && autograd::profile::enabled()) fmt::print("{}", autograd::profile::report());
  if (!run_eval(config.train.steps)) {
    if (lead)
      log::info("stopping in the final evaluation; the checkpoint of step {} is saved", config.train.steps);
    return kExitInterrupted;
  }
  if (lead)
    log::info("finished at step {}: checkpoint {}", config.train.steps,
              (fs::path(checkpoint_dir) / checkpoint_name(config.train.steps)).string());
  return kExitOk;
}

}  // namespace s6::trainer
