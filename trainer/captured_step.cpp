#include "trainer/captured_step.h"

#include <cstring>

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

class GraphStep final : public CapturedStep {
 public:
  GraphStep(MambaLM& model, AdamW& optimizer, const TrainConfig& config)
      : model_(model), optimizer_(optimizer), config_(config) {
    const int64_t count = static_cast<int64_t>(model_.parameters().size());
    sumsq_ = Tensor::empty({std::max<int64_t>(count, 1)}, DType::Float32, Device::CUDA);
    status_ = Tensor::empty({static_cast<int64_t>((sizeof(kc::DeviceStepStatus) + 3) / 4)}, DType::Float32,
                            Device::CUDA);
  }
  ~GraphStep() override {
    cuda::destroy_graph(graph_);
    // The replays leave the last step's gradients in place (the captured backward assigns them);
    // an eager step after this one must start from none, as after every eager step.
    optimizer_.zero_grad();
  }

  CapturedOutcome run(const data::Batch& batch, double lr) override {
    const Tensor targets = batch.targets.view({batch.targets.numel()});
    if (!inputs_.defined()) {
      inputs_ = Tensor::empty(batch.inputs.shape(), batch.inputs.dtype(), Device::CUDA);
      targets_ = Tensor::empty(targets.shape(), targets.dtype(), Device::CUDA);
      staging_ = Staging(inputs_.nbytes(), targets_.nbytes());
    }
    S6_CHECK(batch.inputs.shape() == inputs_.shape() && targets.shape() == targets_.shape() &&
                 batch.inputs.is_contiguous() && targets.is_contiguous(),
             "captured step: the batch changed shape ({} vs {})", batch.inputs.describe(), inputs_.describe());
    // Everything the step reads from the host goes through page-locked memory without waiting;
    // the one synchronisation is for the status at the end.
    std::memcpy(staging_.inputs(), batch.inputs.data_ptr(), inputs_.nbytes());
    std::memcpy(staging_.targets(), targets.data_ptr(), targets_.nbytes());
    *staging_.scalars() = kc::adamw_device_scalars(optimizer_.hyperparameters(lr, optimizer_.step_count() + 1));
    cuda::copy_bytes_async(inputs_.data_ptr(), staging_.inputs(), inputs_.nbytes(), cuda::CopyKind::HostToDevice);
    cuda::copy_bytes_async(targets_.data_ptr(), staging_.targets(), targets_.nbytes(), cuda::CopyKind::HostToDevice);
    cuda::copy_bytes_async(scalars_.data_ptr(), staging_.scalars(), sizeof(kc::DeviceAdamWScalars),
                           cuda::CopyKind::HostToDevice);
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
      Tensor logits = reshape(model_.forward(inputs_), {targets_.numel(), vocab});
      logits_ = logits.detach();
      Tensor loss = cross_entropy(logits, targets_);
      autograd::backward(loss);
      std::vector<NamedParameter>& params = model_.parameters();
      cuda::memset_zero(sumsq_.data_ptr(), sumsq_.nbytes());
      optimizer_.launch_sum_of_squares(sumsq_.data<float>(), /*capturing=*/true);
      auto* status = static_cast<kc::DeviceStepStatus*>(status_.data_ptr());
      kc::finish_gradient_norm(status, sumsq_.data<float>(), static_cast<int64_t>(params.size()),
                               loss.data<float>(), config_.optim.grad_clip, cuda::current_stream());
      optimizer_.launch_update(static_cast<const kc::DeviceAdamWScalars*>(scalars_.data_ptr()), status,
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

  // One page-locked block: [inputs | targets | AdamW scalars | step status], each 16-byte aligned.
  class Staging {
   public:
    Staging() = default;
    Staging(int64_t input_bytes, int64_t target_bytes)
        : targets_at_(align(input_bytes)), scalars_at_(targets_at_ + align(target_bytes)),
          status_at_(scalars_at_ + align(sizeof(kc::DeviceAdamWScalars))),
          base_(static_cast<char*>(cuda::allocate_pinned(status_at_ + align(sizeof(kc::DeviceStepStatus)))),
                cuda::release_pinned) {}
    void* inputs() { return base_.get(); }
    void* targets() { return base_.get() + targets_at_; }
    kc::DeviceAdamWScalars* scalars() { return reinterpret_cast<kc::DeviceAdamWScalars*>(base_.get() + scalars_at_); }
    kc::DeviceStepStatus* status() { return reinterpret_cast<kc::DeviceStepStatus*>(base_.get() + status_at_); }

   private:
    static int64_t align(int64_t n) { return (n + 15) / 16 * 16; }
    int64_t targets_at_ = 0, scalars_at_ = 0, status_at_ = 0;
    std::unique_ptr<char, void (*)(void*)> base_{nullptr, cuda::release_pinned};
  };

  MambaLM& model_;
  AdamW& optimizer_;
  Staging staging_;
  const TrainConfig& config_;
  Tensor inputs_, targets_, logits_, loss_;
  Tensor sumsq_, status_;
  Tensor scalars_ = Tensor::empty({4}, DType::Float32, Device::CUDA);
  cuda::CapturedGraph* graph_ = nullptr;
};

}  // namespace

std::unique_ptr<CapturedStep> make_captured_step(MambaLM& model, AdamW& optimizer, const TrainConfig& config) {
  return std::make_unique<GraphStep>(model, optimizer, config);
}
#else
std::unique_ptr<CapturedStep> make_captured_step(MambaLM&, AdamW&, const TrainConfig&) { return nullptr; }
#endif

}  // namespace s6::trainer
