#include "trainer/captured_step.h"

#include "autograd/tape.h"
#include "core/cuda_runtime.h"
#include "layers/ops.h"
#ifdef S6_WITH_CUDA
#include "kernels/cuda/optim.h"
#endif

namespace s6::trainer {

#ifdef S6_WITH_CUDA
namespace {

namespace kc = kernels::cuda;

// What the host sends each step, in one copy: AdamW's scalars first (the update kernels read them
// there), then the index of the batch the graph generates.
struct StepScalars {
  kc::DeviceAdamWScalars adamw;
  uint64_t batch_index;
};

Tensor device_bytes(size_t bytes) {
  return Tensor::empty({static_cast<int64_t>((bytes + 7) / 8)}, DType::Int64, Device::CUDA);
}

class GraphStep final : public CapturedStep {
 public:
  GraphStep(MambaLM& model, AdamW& optimizer, const TrainConfig& config, const CapturedData& data)
      : model_(model), optimizer_(optimizer), config_(config), data_(data) {
    S6_CHECK(data_.task && data_.batch_size >= 1, "captured step: needs a task and a batch size");
    const int64_t count = static_cast<int64_t>(model_.parameters().size());
    sumsq_ = Tensor::empty({std::max<int64_t>(count, 1)}, DType::Float32, Device::CUDA);
    status_ = device_bytes(sizeof(kc::DeviceStepStatus));
    scalars_ = device_bytes(sizeof(StepScalars));
    batch_ = data_.task->make_batch(data_.batch_size, Device::CUDA);
    targets_ = batch_.targets.view({batch_.targets.numel()});
  }
  ~GraphStep() override {
    cuda::destroy_graph(graph_);
    // The replays leave the last step's gradients in place (the captured backward assigns them);
    // an eager step after this one must start from none, as after every eager step.
    optimizer_.zero_grad();
  }

  CapturedOutcome run(uint64_t batch_index, double lr) override {
    // The one host-to-device copy of the step, from page-locked memory without waiting; the one
    // synchronisation is for the status at the end.
    StepScalars* scalars = staging_.scalars();
    scalars->adamw = kc::adamw_device_scalars(optimizer_.hyperparameters(lr, optimizer_.step_count() + 1));
    scalars->batch_index = batch_index;
    cuda::copy_bytes_async(scalars_.data_ptr(), scalars, sizeof(StepScalars), cuda::CopyKind::HostToDevice);
    if (!data_.task->samples_on_device()) copy_host_batch(batch_index);
    if (!graph_) capture();
    cuda::replay(graph_);
    cuda::copy_bytes_async(staging_.status(), status_.data_ptr(), sizeof(kc::DeviceStepStatus),
                           cuda::CopyKind::DeviceToHost);
    cuda::synchronize();
    const kc::DeviceStepStatus status = *staging_.status();
    CapturedOutcome out;
    out.loss = status.loss;
    out.norm.norm = status.norm;
    out.skipped = status.skip != 0;
    if (out.skipped) {  // name the culprit as the eager step does (the norm itself came from the device)
      out.norm.first_nonfinite = optimizer_.norm_from_sums(sumsq_.to_vector<double>()).first_nonfinite;
    } else {
      optimizer_.set_step_count(optimizer_.step_count() + 1);
    }
    return out;
  }

  Tensor logits() const override { return logits_; }

 private:
  void capture() {
    const int64_t vocab = model_.config().padded_vocab();
    optimizer_.zero_grad();  // the captured backward assigns the gradients (no accumulation)
    cuda::begin_capture();
    try {
      if (data_.task->samples_on_device())
        data_.task->sample_on_device(batch_, data_.seed,
                                     &static_cast<const StepScalars*>(scalars_.data_ptr())->batch_index, data_.rank);
      Tensor logits = reshape(model_.forward(batch_.inputs), {targets_.numel(), vocab});
      logits_ = logits.detach();
      Tensor loss = cross_entropy(logits, targets_);
      autograd::backward(loss);
      std::vector<NamedParameter>& params = model_.parameters();
      cuda::memset_zero(sumsq_.data_ptr(), sumsq_.nbytes());
      optimizer_.launch_sum_of_squares(sumsq_.data<float>(), /*capturing=*/true);
      auto* status = static_cast<kc::DeviceStepStatus*>(status_.data_ptr());
      kc::finish_gradient_norm(status, sumsq_.data<float>(), static_cast<int64_t>(params.size()),
                               loss.data<float>(), config_.optim.grad_clip, cuda::current_stream());
      optimizer_.launch_update(&static_cast<const StepScalars*>(scalars_.data_ptr())->adamw, status,
                               /*capturing=*/true);
      loss_ = loss.detach();
      graph_ = cuda::end_capture();
      optimizer_.upload_pending_tables();
    } catch (...) {
      autograd::clear_tape();
      cuda::abort_capture();
      throw;
    }
  }

  // File tasks (no device generator): the host samples the batch and copies it into the graph's
  // batch buffers, allocated before the capture, ahead of the replay on the same stream.
  void copy_host_batch(uint64_t batch_index) {
    if (!host_batch_.inputs.defined()) host_batch_ = data_.task->make_batch(data_.batch_size);
    data_.task->sample_into(host_batch_, data_.seed, batch_index, data_.rank);
    batch_.inputs.copy_(host_batch_.inputs);
    batch_.targets.copy_(host_batch_.targets);
    if (data_.task->separate_eval_targets()) batch_.eval_targets.copy_(host_batch_.eval_targets);
  }

  // One page-locked block: [step scalars | step status].
  class Staging {
   public:
    Staging()
        : base_(static_cast<char*>(cuda::allocate_pinned(kStatusAt + sizeof(kc::DeviceStepStatus))),
                cuda::release_pinned) {}
    StepScalars* scalars() { return reinterpret_cast<StepScalars*>(base_.get()); }
    kc::DeviceStepStatus* status() { return reinterpret_cast<kc::DeviceStepStatus*>(base_.get() + kStatusAt); }

   private:
    static constexpr size_t kStatusAt = (sizeof(StepScalars) + 15) / 16 * 16;
    std::unique_ptr<char, void (*)(void*)> base_;
  };

  MambaLM& model_;
  AdamW& optimizer_;
  Staging staging_;
  const TrainConfig& config_;
  const CapturedData data_;
  data::Batch batch_;  // on the device, written by the graph (or copied from host_batch_)
  data::Batch host_batch_;
  Tensor targets_, logits_, loss_;
  Tensor sumsq_, status_, scalars_;
  cuda::CapturedGraph* graph_ = nullptr;
};

}  // namespace

std::unique_ptr<CapturedStep> make_captured_step(MambaLM& model, AdamW& optimizer, const TrainConfig& config,
                                                 const CapturedData& data) {
  return std::make_unique<GraphStep>(model, optimizer, config, data);
}
#else
std::unique_ptr<CapturedStep> make_captured_step(MambaLM&, AdamW&, const TrainConfig&, const CapturedData&) {
  return nullptr;
}
#endif

}  // namespace s6::trainer
