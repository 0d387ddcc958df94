// The training loop: batch -> forward -> loss -> backward -> norm/clip -> AdamW -> metrics, with
// evaluation every eval.every steps and at the end.
#include "trainer/trainer.h"

#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>

#include "autograd/profile.h"
#include "autograd/tape.h"
#include "core/cuda_runtime.h"
#include "core/log.h"
#include "data/task.h"
#include "layers/mamba.h"
#include "layers/op_checks.h"
#include "layers/ops.h"
#include "trainer/captured_step.h"
#include "trainer/data_parallel.h"
#include "trainer/evaluate.h"
#include "trainer/hf_model.h"
#include "trainer/exit_codes.h"
#include "trainer/metrics.h"
#include "trainer/optimizer.h"
#include "trainer/resume.h"
#include "trainer/signals.h"

namespace s6::trainer {

namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

// Test hook: S6_FAULT_INJECT=sigterm_at_step=N or sigkill_at_step=N makes the process signal
// itself after step N, so the kill tests are deterministic (the signal path is the real one).
void maybe_inject_signal(int64_t done) {
  static const std::pair<int, int64_t> plan = [] {
    const char* env = std::getenv("S6_FAULT_INJECT");
    std::string v = env ? env : "";
    for (auto [prefix, sig] : {std::pair{"sigterm_at_step=", SIGTERM}, std::pair{"sigkill_at_step=", SIGKILL}})
      if (v.rfind(prefix, 0) == 0) return std::pair<int, int64_t>{sig, std::stoll(v.substr(std::strlen(prefix)))};
    return std::pair<int, int64_t>{0, -1};
  }();
  if (plan.first && done == plan.second) std::raise(plan.first);
}

// Makes a fresh non-blocking stream current for the scope (when enabled), after the work queued on
// the previous stream has finished; at exit it drains the new stream and restores the previous.
class StreamScope {
 public:
  explicit StreamScope(bool enabled) {
    if (!enabled) return;
    previous_ = cuda::current_stream();
    cuda::synchronize();
    stream_ = cuda::create_stream();
    cuda::set_current_stream(stream_);
  }
  ~StreamScope() {
    if (!stream_) return;
    try {
      cuda::synchronize();
    } catch (const std::exception& e) {
      log::error("{}", e.what());  // a destructor must not throw; the run's own error is reported
    }
    cuda::set_current_stream(previous_);
    cuda::destroy_stream(stream_);
  }
  StreamScope(const StreamScope&) = delete;
  StreamScope& operator=(const StreamScope&) = delete;

 private:
  void* previous_ = nullptr;
  void* stream_ = nullptr;
};

std::string megabytes(int64_t bytes) { return fmt::format("{:.2f} MB", static_cast<double>(bytes) / 1e6); }

void print_startup(const TrainConfig& c, const RunOptions& o, const MambaLM& model, Device device,
                   const data::Task& task) {
  int64_t param_bytes = 0;
  for (const NamedParameter& p : model.parameters()) param_bytes += p.tensor.nbytes();
  const MambaConfig& m = c.model;
  fmt::print("s6 train | {} -> {}\n", o.config_path, c.run_dir);
  fmt::print("  {:<12} {}\n", "device", device == Device::CUDA ? "cuda" : "cpu");
  fmt::print("  {:<12} {} layers, d_model {}, d_inner {}, d_state {}, dt_rank {}, vocab {} (padded {}), {} / {}\n",
             "model", m.n_layer, m.d_model, m.d_inner(), m.d_state, m.resolved_dt_rank(), m.vocab_size,
             m.padded_vocab(), m.layer == LayerKind::S6 ? "S6" : "S4 (LTI)",
             m.block == BlockKind::Mamba ? "Mamba block" : "no-gate block");
  fmt::print("  {:<12} {}\n", "parameters", model.num_parameters());
#ifdef S6_WITH_NCCL
  fmt::print("  {:<12} on (data parallelism over GPUs)\n", "nccl");
#else
  fmt::print("  {:<12} off: {}\n", "nccl",
             cuda::compiled_with_cuda() ? "built without NCCL, so GPUs cannot train together (README: install libnccl-dev, rebuild)"
                                        : "CPU-only build (CPU ranks reduce over TCP)");
#endif
  fmt::print("  {:<12} {}\n", "precision",
             c.train.precision == "bf16" ? "bf16 mixed (bf16 activations and matmuls; fp32 parameters, scan state, "
                                           "residual stream, norms and loss)"
                                         : "fp32");
  fmt::print("  {:<12} {}: seq_len {}, vocab {}, tokens {}, loss positions {}\n", "task", task.name(),
             task.seq_len(), task.vocab(), c.task.num_tokens, c.task.loss_positions);
  if (!c.task.curriculum_lengths.empty()) {
    std::string phases;
    for (size_t i = 0; i < c.task.curriculum_lengths.size(); ++i)
      phases += fmt::format("{} steps at {}, ", c.task.curriculum_steps[i], c.task.curriculum_lengths[i]);
    fmt::print("  {:<12} {}then length {}\n", "curriculum", phases, task.seq_len());
  }
  fmt::print("  {:<12} AdamW lr {:g} ({}, warmup {}), betas ({:g}, {:g}), eps {:g}, weight decay {:g}, clip {:g}\n",
             "optimizer", c.optim.lr, c.schedule.kind, c.schedule.warmup_steps, c.optim.beta1, c.optim.beta2,
             c.optim.eps, c.optim.weight_decay, c.optim.grad_clip);
  fmt::print("  {:<12} {} steps x batch {} x length {} = {} tokens/step, seed {}\n", "training", c.train.steps,
             c.train.batch_size, task.seq_len(), c.train.batch_size * task.seq_len(), c.seed);
  fmt::print("  {:<12} parameters {} | gradients {} | AdamW moments {}\n", "memory", megabytes(param_bytes),
             megabytes(param_bytes), megabytes(2 * param_bytes));
  std::fflush(stdout);
}

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

int run_training(const TrainConfig& config, const RunOptions& options) {
  const Device device = resolve_device(config.device);
  fs::create_directories(fs::path(config.run_dir) / "checkpoints");
  {
    std::ofstream out(fs::path(config.run_dir) / "config.yaml");
    out << to_yaml(config);
  }

  std::unique_ptr<data::Task> task = make_configured_task(config, config.task.seq_len);

  DataParallel* dp = options.data_parallel;
  const bool lead = options.rank == 0;  // rank 0 logs, writes metrics and checkpoints
  MambaLM model(config.model, config.seed, DType::Float32, device, compute_dtype(config));
  AdamW optimizer(model.parameters(), config.optim);
  if (lead) print_startup(config, options, model, device, *task);

  const std::string checkpoint_dir = (fs::path(config.run_dir) / "checkpoints").string();
  const std::string metrics_path = (fs::path(config.run_dir) / "metrics.jsonl").string();
  if (int n = remove_stale_temp_files(checkpoint_dir)) log::warn("removed {} stale checkpoint temp file(s)", n);
  int64_t start_step = 0, consecutive_skips = 0;
  if (std::optional<CheckpointContents> resumed = find_resume_checkpoint(config, options.resume)) {
    restore(*resumed, model, &optimizer);
    start_step = resumed->meta.step;
    consecutive_skips = resumed->meta.consecutive_skips;
  } else if (!config.init_from.empty() && is_hf_folder(config.init_from)) {
    init_from_hf_folder(config.init_from, config.model, model);
  } else if (!config.init_from.empty()) {
    CheckpointContents init = read_checkpoint(config.init_from, /*model_only=*/true);
    check_model_shape(init.meta.model_shape, config, config.init_from, /*for_init=*/true);
    restore(init, model, nullptr);
    log::info("init.from: weights from {} (step {}), fresh optimizer", config.init_from, init.meta.step);
  }
  if (dp) dp->check_agreement(to_yaml(config), start_step);
  if (lead) truncate_metrics(metrics_path, start_step);  // a fresh start (step 0) begins a new curve
  int64_t last_saved = start_step;
  auto save = [&](int64_t step) {  // every rank holds the same state; rank 0 writes it
    if (lead) {
      std::string path = (fs::path(checkpoint_dir) / checkpoint_name(step)).string();
      write_checkpoint(path, capture(model, optimizer, config, step, options.world_size, consecutive_skips));
      prune_checkpoints(checkpoint_dir, config.checkpoint.keep_last, config.checkpoint.keep_every);
    }
    if (dp) dp->barrier("checkpoint");
    last_saved = step;
    autograd::profile::mark("step", "checkpoint");
  };
  install_stop_handlers();
  const auto run_start = Clock::now();

  MetricsWriter metrics(lead ? metrics_path : "");
  Progress progress(config.train.steps, start_step);
  const int64_t batch = config.train.batch_size / options.world_size;
  int64_t length = training_length(config, start_step);
  if (length != task->seq_len()) task = make_configured_task(config, length);
  const int64_t vocab = model.config().padded_vocab();
  std::vector<int64_t> eval_lengths = config.eval.lengths;
  if (eval_lengths.empty()) eval_lengths.push_back(config.task.seq_len);

  auto run_eval = [&](int64_t step) {
    for (int64_t len : eval_lengths) {
      auto t0 = Clock::now();
      EvalResult r = evaluate(model, config, len, dp);
      metrics.write(EvalRecord{step, len, r.loss, r.accuracy});
      progress.finish();
      if (lead)
        log::info("eval step {} length {}: loss {:.4f}, accuracy {:.2f}% ({} examples, {:.1f} s)", step, len,
                r.loss, 100.0 * r.accuracy, r.examples,
                std::chrono::duration<double>(Clock::now() - t0).count());
    }
  };

  // The captured step runs on a stream of our own (the legacy default stream cannot be captured).
  const bool use_graph = device == Device::CUDA && !dp && config.train.cuda_graph != "off";
  std::unique_ptr<CapturedStep> captured;
  bool graph_failed = false;
  StreamScope graph_stream(use_graph);

  data::Batch host_batch = task->make_batch(batch);
  double data_seconds = 0;  // generation time, reported against the step time at the end
  auto window_start = Clock::now();
  int64_t window_steps = 0;
  for (int64_t step = start_step; step < config.train.steps; ++step) {
    if (const int64_t phase_length = training_length(config, step); phase_length != length) {
      length = phase_length;  // the next phase of the length curriculum
      captured.reset();  // the graph holds the old task: run this step eagerly, capture the next
      task = make_configured_task(config, length);
      host_batch = task->make_batch(batch);
      if (lead) log::info("curriculum: training at length {} from step {}", length, step + 1);
      window_start = Clock::now();  // ms/step and tokens/s restart with the new shape
      window_steps = 0;
    }
    // The captured step generates its batch on the device; the host makes the same batch only
    // where it is read: the eager step, and the accuracy at a logging step.
    bool host_sampled = false;
    auto sample_on_host = [&] {
      if (host_sampled) return;
      const auto data_start = Clock::now();
      task->sample_into(host_batch, config.seed, static_cast<uint64_t>(step), static_cast<uint32_t>(options.rank));
      data_seconds += std::chrono::duration<double>(Clock::now() - data_start).count();
      host_sampled = true;
    };
    const double lr = learning_rate(config.optim, config.schedule, config.train.steps, step);
    Tensor logits;
    double loss_value = 0;
    GradientNorm gn;
    bool updated = false;  // the captured step has already applied (or skipped) the update
    if (captured) {
      try {
        CapturedOutcome outcome = captured->run(static_cast<uint64_t>(step), lr);
        loss_value = outcome.loss;
        gn = outcome.norm;
        updated = !outcome.skipped;
        logits = captured->logits();
        autograd::profile::mark("step", "captured step (graph replay)");
      } catch (const Error& e) {
        if (config.train.cuda_graph == "on") throw;
        log::warn("train.cuda_graph=auto: capturing the step failed, continuing eagerly: {}", e.what());
        captured.reset();
        graph_failed = true;
      }
    }
    if (!captured) {
      sample_on_host();
      Tensor inputs = host_batch.inputs.to(device);
      Tensor targets = host_batch.targets.view({batch * length}).to(device);
      autograd::profile::mark("step", "data + copy to device");
      logits = model.forward(inputs);
      Tensor loss = cross_entropy(reshape(logits, {batch * length, vocab}), targets);
      // With data parallelism, gradient buckets are all-reduced as backward finishes them.
      autograd::backward(loss, Tensor(),
                         dp ? dp->start_gradient_averaging(model.parameters()) : autograd::LeafReadyFn());
      loss_value = loss.item();
      autograd::profile::mark("step", "loss.item");
    }
#ifdef S6_WITH_CUDA
    if (device == Device::CUDA) detail::check_cuda_index_errors();  // a bad token id names itself
#endif
    bool out_of_time = config.train.max_minutes > 0 &&
        std::chrono::duration<double>(Clock::now() - run_start).count() > 60.0 * config.train.max_minutes;
    bool stop_now = stop_requested();
    if (dp) {
      // One reduction decides for every rank: the mean loss (so a NaN anywhere is NaN everywhere,
      // and skip/halt agree), and whether any rank was asked to stop or ran out of time.
      dp->finish_gradient_averaging();  // the rest of the buckets (zeros for unreached parameters)
      std::vector<double> shared{loss_value, stop_now ? 1.0 : 0.0, out_of_time ? 1.0 : 0.0};
      dp->sum(shared);
      loss_value = shared[0] / dp->world_size();
      stop_now = shared[1] > 0;
      out_of_time = shared[2] > 0;
      autograd::profile::mark("step", "all-reduce + shared decisions");
    }
    if (!captured) {
      gn = optimizer.gradient_norm();
      autograd::profile::mark("step", "gradient norm");
    }
    const int64_t done = step + 1;

    if (!std::isfinite(loss_value) || !std::isfinite(gn.norm)) {
      std::string culprit = !std::isfinite(loss_value) ? "the loss" : "the gradient of " + gn.first_nonfinite;
      if (!captured) optimizer.zero_grad();
      if (config.train.on_nonfinite == "halt") {
        progress.finish();
        if (lead) log::error("step {}: {} is not finite (loss {}, grad norm {}); halting as train.on_nonfinite=halt",
                   done, culprit, loss_value, gn.norm);
        metrics.write_event(done, "halt_nonfinite", culprit);
        return kExitNonFinite;
      }
      ++consecutive_skips;
      metrics.write_event(done, "skip_nonfinite", culprit);
      if (lead) log::warn("step {}: {} is not finite; update skipped ({} in a row)", done, culprit, consecutive_skips);
      if (consecutive_skips > config.train.max_consecutive_skips) {
        log::error("halting: {} consecutive non-finite steps exceed train.max_consecutive_skips={}",
                   consecutive_skips, config.train.max_consecutive_skips);
        return kExitNonFinite;
      }
      continue;  // a skipped step is not checkpointed: its update never happened
    }
    consecutive_skips = 0;
    if (!updated) {
      optimizer.step(lr, clip_scale(gn.norm, config.optim.grad_clip));
      optimizer.zero_grad();
      autograd::profile::mark("step", "optimizer + zero_grad");
    }
    // From the second step on (handles, workspaces and kernels exist by then), replay the step.
    if (use_graph && !captured && !graph_failed)
      captured = make_captured_step(model, optimizer, config,
                                    {task.get(), batch, config.seed, static_cast<uint32_t>(options.rank)});
    ++window_steps;

    if (done % config.train.log_every == 0 || done == config.train.steps) {
      if (device == Device::CUDA) cuda::synchronize();
      double seconds = std::chrono::duration<double>(Clock::now() - window_start).count();
      double ms = 1e3 * seconds / std::max<int64_t>(window_steps, 1);
      sample_on_host();  // after the window's time: the graph's batch was made on the device
      data::Accuracy acc = data::accuracy(logits.detach().view({batch * length, vocab}),
                                          host_batch.eval_targets);
      if (dp) {
        std::vector<double> counts{static_cast<double>(acc.correct), static_cast<double>(acc.total)};
        dp->sum(counts);
        acc.correct = static_cast<int64_t>(counts[0]);
        acc.total = static_cast<int64_t>(counts[1]);
      }
      TrainRecord rec{done, loss_value, acc.fraction(), lr, gn.norm, ms,
                      static_cast<double>(config.train.batch_size * length) / (ms / 1e3)};
      metrics.write(rec);
      if (lead) progress.update(rec);
      window_start = Clock::now();
      window_steps = 0;
      autograd::profile::mark("step", "logging + accuracy");
    }
    if (config.eval.every > 0 && done % config.eval.every == 0 && done != config.train.steps) {
      run_eval(done);
      window_start = Clock::now();
      autograd::profile::restart_clock();
    }
    if (config.checkpoint.every > 0 && done % config.checkpoint.every == 0) save(done);
    maybe_inject_signal(done);
    if (!dp) stop_now = stop_requested();  // a single process also sees a signal from this step
    if ((stop_now || out_of_time) && done < config.train.steps) {
      progress.finish();
      if (last_saved != done) save(done);
      if (lead)
        log::info("stopping at step {} ({}); checkpoint {} saved, resume with the same command", done,
                out_of_time ? "train.max_minutes reached" : fmt::format("signal {}", stop_signal()),
                (fs::path(checkpoint_dir) / checkpoint_name(done)).string());
      if (lead && autograd::profile::enabled()) fmt::print("{}", autograd::profile::report());
      if (out_of_time && !stop_now) run_eval(done);  // a time box still reports its result
      return kExitInterrupted;
    }
  }
  progress.finish();
  if (device == Device::CUDA) cuda::synchronize();
  const double train_seconds = std::chrono::duration<double>(Clock::now() - run_start).count();
  if (lead && start_step >= config.train.steps)
    log::info("nothing to train: the run is at step {} of train.steps {}; evaluating only", start_step,
              config.train.steps);
  else if (lead)
    log::info("trained steps {}..{} in {:.1f} s; data generation on the host took {:.3f} s ({:.2f}% of it)", start_step + 1,
            config.train.steps, train_seconds, data_seconds, 100.0 * data_seconds / std::max(train_seconds, 1e-9));
  if (last_saved != config.train.steps) save(config.train.steps);
  if (lead && autograd::profile::enabled()) fmt::print("{}", autograd::profile::report());
  run_eval(config.train.steps);
  if (lead)
    log::info("finished at step {}: checkpoint {}", config.train.steps,
              (fs::path(checkpoint_dir) / checkpoint_name(config.train.steps)).string());
  return kExitOk;
}

}  // namespace s6::trainer
