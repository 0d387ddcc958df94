#include "trainer/captured_step.h"

#include <cmath>

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
  ~GraphStep() override { cuda::destroy_graph(graph_); }

  CapturedOutcome run(const data::Batch& batch, double lr) override {
    if (!inputs_.defined()) {
      inputs_ = batch.inputs.to(Device::CUDA);
      targets_ = batch.targets.view({batch.targets.numel()}).to(Device::CUDA);
    } else {
      inputs_.copy_(batch.inputs);
      targets_.copy_(batch.targets.view({batch.targets.numel()}));
    }
    kernels::AdamWParams hp;
    hp.lr = lr;
    hp.beta1 = config_.optim.beta1;
    hp.beta2 = config_.optim.beta2;
    hp.eps = config_.optim.eps;
    hp.weight_decay = config_.optim.weight_decay;
    hp.step = optimizer_.step_count() + 1;
    const kc::DeviceAdamWScalars scalars = kc::adamw_device_scalars(hp);
    cuda::copy_bytes(scalars_.data_ptr(), &scalars, sizeof(scalars), cuda::CopyKind::HostToDevice);
    if (!graph_) capture();
    cuda::replay(graph_);
    kc::DeviceStepStatus status{};
    cuda::copy_bytes(&status, status_.data_ptr(), sizeof(status), cuda::CopyKind::DeviceToHost);
    CapturedOutcome out;
    out.loss = status.loss;
    out.norm.norm = status.norm;
    out.skipped = status.skip != 0;
    if (out.skipped) {
      std::vector<float> sums = sumsq_.to_vector<float>();
      for (size_t i = 0; i < model_.parameters().size(); ++i)
        if (!std::isfinite(sums[i])) {
          out.norm.first_nonfinite = model_.parameters()[i].name;
          break;
        }
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
      optimizer_.launch_update(scalars_.data_ptr(), status, /*capturing=*/true);
      loss_ = loss.detach();
      graph_ = cuda::end_capture();
      optimizer_.upload_pending_tables();
    } catch (...) {
      autograd::clear_tape();
      cuda::abort_capture();
      throw;
    }
  }

  MambaLM& model_;
  AdamW& optimizer_;
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
