// The training step (see train_step.h): the eager step, and the same step captured as a CUDA graph.
#include "trainer/train_step.h"

#include <chrono>
#include <cmath>

#include "autograd/profile.h"
#include "core/cuda_runtime.h"
#include "core/log.h"
#include "layers/ops.h"
#include "trainer/data_parallel.h"
#ifdef S6_WITH_CUDA
#include "kernels/cuda/optim.h"  // the step's end decided on the device (optimizer kernels)
#endif

namespace s6::trainer {

StreamScope::StreamScope(bool enabled) {
  if (!enabled) return;
  previous_ = cuda::current_stream();
  cuda::synchronize();
  stream_ = cuda::create_stream();
  cuda::set_current_stream(stream_);
}

StreamScope::~StreamScope() {
  if (!stream_) return;
  try {
    cuda::synchronize();
  } catch (const std::exception& e) {
    log::error("{}", e.what());  // a destructor must not throw; the run's own error is reported
  }
  cuda::set_current_stream(previous_);
  cuda::destroy_stream(stream_);
}

#ifdef S6_WITH_CUDA
namespace kc = kernels::cuda;

// The step replayed as one CUDA graph. Per replay the host sends one copy (AdamW's scalars and
// the batch index, from page-locked memory, without waiting) and waits once, for the status.
class StepGraph {
 public:
  explicit StepGraph(TrainStep& step) : step_(step), optimizer_(step.optimizer_) {
    const int64_t count = static_cast<int64_t>(step_.model_.parameters().size());
    sumsq_ = Tensor::empty({std::max<int64_t>(count, 1)}, DType::Float32, Device::CUDA);
    status_ = device_bytes(sizeof(kc::DeviceStepStatus));
    scalars_ = device_bytes(sizeof(Scalars));
    batch_ = step_.data_.task->make_batch(step_.data_.batch_size, Device::CUDA);
  }
  ~StepGraph() {
    cuda::destroy_graph(graph_);
    // The replays leave the last step's gradients in place (the captured backward assigns them);
    // an eager step after this one must start from none, as after every eager step.
    optimizer_.zero_grad();
  }

  StepResult run(uint64_t index, double lr) {
    Scalars* scalars = staging_.scalars();
    scalars->adamw = kc::adamw_device_scalars(optimizer_.hyperparameters(lr, optimizer_.step_count() + 1));
    scalars->batch_index = index;
    cuda::copy_bytes_async(scalars_.data_ptr(), scalars, sizeof(Scalars), cuda::CopyKind::HostToDevice);
    if (!step_.data_.task->samples_on_device()) step_.copy_host_batch(index, batch_);
    if (!graph_) capture();
    cuda::replay(graph_);
    cuda::copy_bytes_async(staging_.status(), status_.data_ptr(), sizeof(kc::DeviceStepStatus),
                           cuda::CopyKind::DeviceToHost);
    cuda::synchronize();
    const kc::DeviceStepStatus status = *staging_.status();
    StepResult out;
    out.loss = status.loss;
    out.norm.norm = status.norm;
    out.skipped = status.skip != 0;
    out.replayed = true;
    if (out.skipped)  // name the culprit as the eager step does (the norm itself came from the device)
      out.norm.first_nonfinite = optimizer_.norm_from_sums(sumsq_.to_vector<double>()).first_nonfinite;
    else optimizer_.set_step_count(optimizer_.step_count() + 1);
    return out;
  }

 private:
  // What the host sends each step: AdamW's scalars first (the update kernels read them there),
  // then the index of the batch the graph generates.
  struct Scalars {
    kc::DeviceAdamWScalars adamw;
    uint64_t batch_index;
  };

  static Tensor device_bytes(size_t bytes) {
    return Tensor::empty({static_cast<int64_t>((bytes + 7) / 8)}, DType::Int64, Device::CUDA);
  }

  void capture() {
    const Scalars* scalars = static_cast<const Scalars*>(scalars_.data_ptr());
    optimizer_.zero_grad();  // the captured backward assigns the gradients (no accumulation)
    cuda::begin_capture();
    try {
      const StepData& d = step_.data_;
      if (d.task->samples_on_device()) d.task->sample_on_device(batch_, d.seed, &scalars->batch_index, d.rank);
      Tensor loss = step_.forward_backward(batch_.inputs, batch_.targets.view({batch_.targets.numel()}),
                                           nullptr);
      // The eager step's norm, clip, skip and update (train_step.h), decided on the device.
      cuda::memset_zero(sumsq_.data_ptr(), sumsq_.nbytes());
      optimizer_.launch_sum_of_squares(sumsq_.data<float>(), /*capturing=*/true);
      auto* status = static_cast<kc::DeviceStepStatus*>(status_.data_ptr());
      kc::finish_gradient_norm(status, sumsq_.data<float>(), sumsq_.numel(), loss.data<float>(),
                               step_.config_.optim.grad_clip, cuda::current_stream());
      optimizer_.launch_update(&scalars->adamw, status, /*capturing=*/true);
      loss_ = loss.detach();
      graph_ = cuda::end_capture();
      optimizer_.upload_pending_tables();
    } catch (...) {
      autograd::clear_tape();
      cuda::abort_capture();
      throw;
    }
  }

  // One page-locked block: [step scalars | step status].
  class Staging {
   public:
    Staging()
        : base_(static_cast<char*>(cuda::allocate_pinned(kStatusAt + sizeof(kc::DeviceStepStatus))),
                cuda::release_pinned) {}
    Scalars* scalars() { return reinterpret_cast<Scalars*>(base_.get()); }
    kc::DeviceStepStatus* status() { return reinterpret_cast<kc::DeviceStepStatus*>(base_.get() + kStatusAt); }

   private:
    static constexpr size_t kStatusAt = (sizeof(Scalars) + 15) / 16 * 16;
    std::unique_ptr<char, void (*)(void*)> base_;
  };

  TrainStep& step_;
  AdamW& optimizer_;
  Staging staging_;
  data::Batch batch_;  // on the device, written by the graph (file tasks: copied from the host)
  Tensor loss_;        // kept so the graph's loss buffer stays with it
  Tensor sumsq_, status_, scalars_;
  cuda::CapturedGraph* graph_ = nullptr;
};
#else
class StepGraph {
 public:
  explicit StepGraph(TrainStep&) { S6_FAIL("train.cuda_graph: this build has no CUDA"); }
  StepResult run(uint64_t, double) { return {}; }
};
#endif

TrainStep::TrainStep(MambaLM& model, AdamW& optimizer, const TrainConfig& config, const StepData& data,
                     DataParallel* dp)
    : model_(model),
      optimizer_(optimizer),
      config_(config),
      data_(data),
      dp_(dp),
      device_(model.device()),
      use_graph_(device_ == Device::CUDA && !dp && config.train.cuda_graph != "off"),
      stream_(std::make_unique<StreamScope>(use_graph_)) {
  set_task(data.task);
}

TrainStep::~TrainStep() = default;

void TrainStep::set_task(const data::Task* task) {
  S6_CHECK(task && data_.batch_size >= 1, "training step: needs a task and a batch size");
  graph_.reset();
  data_.task = task;
  host_batch_ = task->make_batch(data_.batch_size);
  host_batch_index_ = -1;
  if (device_ == Device::CUDA) {
    device_batch_ = task->make_batch(data_.batch_size, Device::CUDA);
    if (!device_index_.defined()) device_index_ = Tensor::zeros({1}, DType::Int64, Device::CUDA);
  }
}

const data::Batch& TrainStep::sample_on_host(uint64_t index) {
  if (host_batch_index_ == static_cast<int64_t>(index)) return host_batch_;
  const auto start = std::chrono::steady_clock::now();
  data_.task->sample_into(host_batch_, data_.seed, index, data_.rank);
  host_data_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  host_batch_index_ = static_cast<int64_t>(index);
  return host_batch_;
}

void TrainStep::copy_host_batch(uint64_t index, data::Batch& device_batch) {
  const data::Batch& b = sample_on_host(index);
  device_batch.inputs.copy_(b.inputs);
  device_batch.targets.copy_(b.targets);
  if (data_.task->separate_eval_targets()) device_batch.eval_targets.copy_(b.eval_targets);
}

Tensor TrainStep::forward_backward(const Tensor& inputs, const Tensor& flat_targets,
                                   const autograd::LeafReadyFn& on_ready) {
  Tensor logits = reshape(model_.forward(inputs), {flat_targets.numel(), model_.config().padded_vocab()});
  logits_ = logits.detach();
  Tensor loss = cross_entropy(logits, flat_targets);
  autograd::backward(loss, Tensor(), on_ready);
  return loss;
}

StepResult TrainStep::run(uint64_t index, double lr, SharedFlags* flags) {
  last_index_ = index;
  if (graph_) {
    StepResult r;
    try {
      r = graph_->run(index, lr);
    } catch (const Error& e) {
      if (config_.train.cuda_graph == "on") throw;
      log::warn("train.cuda_graph=auto: capturing the step failed, continuing eagerly: {}", e.what());
      graph_.reset();
      graph_failed_ = true;
    }
    if (graph_) {
      autograd::profile::mark("step", "captured step (graph replay)");
      check_index_errors(device_);
      return r;
    }
  }
  StepResult r = run_eager(index, lr, flags);
  // From the second step on (handles, workspaces and kernels exist by then), replay the step.
  if (use_graph_ && !graph_failed_ && !graph_) graph_ = std::make_unique<StepGraph>(*this);
  return r;
}

StepResult TrainStep::run_eager(uint64_t index, double lr, SharedFlags* flags) {
  Tensor inputs, targets;
  if (device_ == Device::CUDA && !data_.task->samples_on_device()) {  // file tasks: read on the host
    copy_host_batch(index, device_batch_);
    inputs = device_batch_.inputs;
    targets = device_batch_.targets.view({device_batch_.targets.numel()});
  } else if (device_ == Device::CUDA) {  // generated where the model is (Task::sample_on_device)
    cuda::copy_bytes(device_index_.data_ptr(), &index, sizeof(index), cuda::CopyKind::HostToDevice);
    data_.task->sample_on_device(device_batch_, data_.seed,
                                 reinterpret_cast<const uint64_t*>(device_index_.data<int64_t>()), data_.rank);
    inputs = device_batch_.inputs;
    targets = device_batch_.targets.view({device_batch_.targets.numel()});
  } else {
    const data::Batch& b = sample_on_host(index);
    inputs = b.inputs;
    targets = b.targets.view({b.targets.numel()});
  }
  autograd::profile::mark("step", "batch");
  // With data parallelism, gradient buckets are all-reduced as backward finishes them.
  Tensor loss = forward_backward(
      inputs, targets, dp_ ? dp_->start_gradient_averaging(model_.parameters()) : autograd::LeafReadyFn());
  StepResult r;
  r.loss = loss.item();
  autograd::profile::mark("step", "loss.item");
  check_index_errors(device_);  // a bad token id names itself
  if (dp_) {
    // One reduction decides for every rank: the mean loss (so a NaN anywhere is NaN everywhere,
    // and skip/halt agree), and the flags any rank raised.
    dp_->finish_gradient_averaging();  // the rest of the buckets (zeros for unreached parameters)
    SharedFlags none;
    SharedFlags& f = flags ? *flags : none;
    std::vector<double> shared{r.loss, f.stop ? 1.0 : 0.0, f.out_of_time ? 1.0 : 0.0};
    dp_->sum(shared);
    r.loss = shared[0] / dp_->world_size();
    f.stop = shared[1] > 0;
    f.out_of_time = shared[2] > 0;
    autograd::profile::mark("step", "all-reduce + shared decisions");
  }
  r.norm = optimizer_.gradient_norm();
  autograd::profile::mark("step", "gradient norm");
  r.skipped = !std::isfinite(r.loss) || !std::isfinite(r.norm.norm);
  if (!r.skipped) optimizer_.step(lr, clip_scale(r.norm.norm, config_.optim.grad_clip));
  optimizer_.zero_grad();
  autograd::profile::mark("step", "optimizer + zero_grad");
  return r;
}

data::Accuracy TrainStep::accuracy() {
  const data::Batch& b = sample_on_host(last_index_);  // the graph's batch was made on the device
  data::Accuracy acc = data::accuracy(logits_, b.eval_targets);
  if (dp_) {
    std::vector<double> counts{static_cast<double>(acc.correct), static_cast<double>(acc.total)};
    dp_->sum(counts);
    acc.correct = static_cast<int64_t>(counts[0]);
    acc.total = static_cast<int64_t>(counts[1]);
  }
  return acc;
}

}  // namespace s6::trainer
