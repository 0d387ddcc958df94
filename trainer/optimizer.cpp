// AdamW (PyTorch's formula: decoupled weight decay, bias-corrected moments), global-norm clipping
// and the LR schedules. Moments are fp32 like the parameters.
#include "trainer/optimizer.h"

#include <cmath>

#include "autograd/tape.h"
#include "kernels/cpu/optim.h"
#ifdef S6_WITH_CUDA
#include "core/cuda_runtime.h"
#include "kernels/cuda/optim.h"
#endif

namespace s6::trainer {

double learning_rate(const OptimConfig& optim, const ScheduleConfig& schedule, int64_t total_steps,
                     int64_t step) {
  if (schedule.warmup_steps > 0 && step < schedule.warmup_steps)
    return optim.lr * static_cast<double>(step + 1) / static_cast<double>(schedule.warmup_steps);
  if (schedule.kind == "constant") return optim.lr;
  const double span = std::max<int64_t>(total_steps - schedule.warmup_steps, 1);
  const double progress = std::min(1.0, static_cast<double>(step - schedule.warmup_steps) / span);
  return schedule.min_lr + 0.5 * (optim.lr - schedule.min_lr) * (1.0 + std::cos(M_PI * progress));
}

double clip_scale(double norm, double max_norm) {
  if (max_norm <= 0 || !(norm > max_norm)) return 1.0;
  return max_norm / (norm + 1e-6);
}

#ifdef S6_WITH_CUDA
namespace kc = kernels::cuda;

// The multi-tensor tables of the parameters that have a gradient, mirrored on the device.
struct AdamW::DeviceTables {
  std::vector<kc::MultiTensorEntry> entries;
  std::vector<kc::MultiTensorChunk> chunks;
  Tensor entries_dev, chunks_dev, partial_dev;
  bool pending_upload = false;

  void upload() {
    cuda::copy_bytes(entries_dev.data_ptr(), entries.data(), entries.size() * sizeof(entries[0]),
                     cuda::CopyKind::HostToDevice);
    cuda::copy_bytes(chunks_dev.data_ptr(), chunks.data(), chunks.size() * sizeof(chunks[0]),
                     cuda::CopyKind::HostToDevice);
    pending_upload = false;
  }
};

namespace {
bool same_entries(const std::vector<kc::MultiTensorEntry>& a, const std::vector<kc::MultiTensorEntry>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i].param != b[i].param || a[i].grad != b[i].grad || a[i].exp_avg != b[i].exp_avg ||
        a[i].exp_avg_sq != b[i].exp_avg_sq || a[i].numel != b[i].numel || a[i].slot != b[i].slot ||
        a[i].decayed != b[i].decayed)
      return false;
  return true;
}

Tensor device_bytes(size_t bytes) {
  return Tensor::empty({static_cast<int64_t>((bytes + 3) / 4)}, DType::Float32, Device::CUDA);
}
}  // namespace

AdamW::DeviceTables& AdamW::refresh_tables(bool capturing) {
  if (!device_) device_ = std::make_unique<DeviceTables>();
  DeviceTables& t = *device_;
  std::vector<kc::MultiTensorEntry> entries;
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor g = params_[i].tensor.grad();
    if (!g.defined()) continue;
    entries.push_back({params_[i].tensor.data<float>(), exp_avg_[i].data<float>(), exp_avg_sq_[i].data<float>(),
                       g.data<float>(), g.numel(), static_cast<int32_t>(i), params_[i].weight_decay ? 1 : 0});
  }
  if (!t.entries_dev.defined()) {
    // Sized once for every parameter and never reallocated: a buffer allocated inside a graph
    // capture would come from the capture's pool, whose blocks the replayed kernels also use as
    // scratch, and host-uploaded tables there would be overwritten on every replay.
    S6_CHECK(!capturing, "AdamW: the multi-tensor tables must exist before a graph capture");
    int64_t max_chunks = 0;
    for (const NamedParameter& p : params_)
      max_chunks += (p.tensor.numel() + kc::kMultiTensorChunk - 1) / kc::kMultiTensorChunk;
    t.entries_dev = device_bytes(std::max<size_t>(params_.size(), 1) * sizeof(kc::MultiTensorEntry));
    t.chunks_dev = device_bytes(static_cast<size_t>(std::max<int64_t>(max_chunks, 1)) *
                                sizeof(kc::MultiTensorChunk));
    t.partial_dev = device_bytes(static_cast<size_t>(std::max<int64_t>(max_chunks, 1)) * sizeof(float));
  } else if (same_entries(entries, t.entries)) {
    return t;
  }
  t.entries = std::move(entries);
  t.chunks.clear();
  for (size_t k = 0; k < t.entries.size(); ++k)
    kc::append_multi_tensor_chunks(t.chunks, static_cast<int64_t>(k), t.entries[k].numel);
  if (capturing) t.pending_upload = true;  // a capture may not copy from the host
  else t.upload();
  return t;
}

void AdamW::launch_sum_of_squares(float* sumsq, bool capturing) {
  DeviceTables& t = refresh_tables(capturing);
  kc::sum_of_squares_multi(
      sumsq, t.partial_dev.data<float>(), static_cast<const kc::MultiTensorEntry*>(t.entries_dev.data_ptr()),
      static_cast<int64_t>(t.entries.size()), static_cast<const kc::MultiTensorChunk*>(t.chunks_dev.data_ptr()),
      static_cast<int64_t>(t.chunks.size()), cuda::current_stream());
}

void AdamW::launch_update(const kc::DeviceAdamWScalars* scalars, const kc::DeviceStepStatus* status,
                          bool capturing) {
  DeviceTables& t = refresh_tables(capturing);
  kernels::AdamWParams constants;
  constants.beta1 = config_.beta1;
  constants.beta2 = config_.beta2;
  constants.eps = config_.eps;
  kc::adamw_multi(static_cast<const kc::MultiTensorEntry*>(t.entries_dev.data_ptr()),
                  static_cast<const kc::MultiTensorChunk*>(t.chunks_dev.data_ptr()),
                  static_cast<int64_t>(t.chunks.size()), constants, scalars, status, cuda::current_stream());
}

void AdamW::upload_pending_tables() {
  if (device_ && device_->pending_upload) device_->upload();
}
#else
struct AdamW::DeviceTables {};
void AdamW::launch_sum_of_squares(float*, bool) { S6_FAIL("AdamW: this build has no CUDA"); }
void AdamW::launch_update(const kernels::cuda::DeviceAdamWScalars*, const kernels::cuda::DeviceStepStatus*,
                          bool) {
  S6_FAIL("AdamW: this build has no CUDA");
}
void AdamW::upload_pending_tables() {}
#endif

AdamW::~AdamW() = default;

AdamW::AdamW(std::vector<NamedParameter>& params, const OptimConfig& config)
    : params_(params), config_(config) {
  for (const NamedParameter& p : params_) {
    S6_CHECK(p.tensor.dtype() == DType::Float32, "AdamW: parameter {} is {}, expected float32", p.name,
             p.tensor.describe());
    exp_avg_.push_back(Tensor::zeros_like(p.tensor));
    exp_avg_sq_.push_back(Tensor::zeros_like(p.tensor));
  }
#ifdef S6_WITH_CUDA
  if (!params_.empty() && params_[0].tensor.is_cuda()) refresh_tables(/*capturing=*/false);  // sizes the tables
#endif
}

GradientNorm AdamW::gradient_norm() {
  // Per-parameter sums of squares (on the device for CUDA, one copy back), summed on the host
  // in parameter order so the result is deterministic and the culprit of a NaN can be named.
  std::vector<double> sums(params_.size(), 0.0);
#ifdef S6_WITH_CUDA
  if (!params_.empty() && params_[0].tensor.is_cuda()) {
    Tensor partial = Tensor::zeros({static_cast<int64_t>(params_.size())}, DType::Float32, Device::CUDA);
    launch_sum_of_squares(partial.data<float>(), /*capturing=*/false);
    std::vector<float> host = partial.to_vector<float>();
    sums.assign(host.begin(), host.end());
  } else
#endif
  {
    for (size_t i = 0; i < params_.size(); ++i) {
      Tensor g = params_[i].tensor.grad();
      if (g.defined()) sums[i] = kernels::cpu::sum_of_squares(g.data<float>(), g.numel());
    }
  }
  return norm_from_sums(sums);
}

GradientNorm AdamW::norm_from_sums(const std::vector<double>& sums) const {
  GradientNorm result;
  double total = 0;
  for (size_t i = 0; i < params_.size() && i < sums.size(); ++i) {
    if (!std::isfinite(sums[i]) && result.first_nonfinite.empty()) result.first_nonfinite = params_[i].name;
    total += sums[i];
  }
  result.norm = std::sqrt(total);
  return result;
}

void AdamW::step(double lr, double grad_scale) {
  ++step_count_;
#ifdef S6_WITH_CUDA
  if (!params_.empty() && params_[0].tensor.is_cuda()) {  // the graph step's kernel, scalars from the host
    const kc::DeviceAdamWScalars scalars = kc::adamw_device_scalars(hyperparameters(lr, step_count_));
    const kc::DeviceStepStatus status{0.0, 0.0, static_cast<float>(grad_scale), 0};
    Tensor scalars_dev = device_bytes(sizeof(scalars)), status_dev = device_bytes(sizeof(status));
    cuda::copy_bytes(scalars_dev.data_ptr(), &scalars, sizeof(scalars), cuda::CopyKind::HostToDevice);
    cuda::copy_bytes(status_dev.data_ptr(), &status, sizeof(status), cuda::CopyKind::HostToDevice);
    launch_update(static_cast<const kc::DeviceAdamWScalars*>(scalars_dev.data_ptr()),
                  static_cast<const kc::DeviceStepStatus*>(status_dev.data_ptr()), /*capturing=*/false);
    return;
  }
#endif
  kernels::AdamWParams hp = hyperparameters(lr, step_count_);
  hp.grad_scale = grad_scale;
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor& p = params_[i].tensor;
    Tensor g = p.grad();
    if (!g.defined()) continue;  // a parameter the loss did not reach keeps its value and moments
    hp.weight_decay = params_[i].weight_decay ? config_.weight_decay : 0.0;
    kernels::cpu::adamw(p.data<float>(), exp_avg_[i].data<float>(), exp_avg_sq_[i].data<float>(),
                        g.data<float>(), p.numel(), hp);
  }
}

kernels::AdamWParams AdamW::hyperparameters(double lr, int64_t step) const {
  kernels::AdamWParams hp;
  hp.lr = lr;
  hp.beta1 = config_.beta1;
  hp.beta2 = config_.beta2;
  hp.eps = config_.eps;
  hp.weight_decay = config_.weight_decay;
  hp.step = step;
  return hp;
}

void AdamW::zero_grad() {
  for (NamedParameter& p : params_) p.tensor.set_grad(Tensor());
}

}  // namespace s6::trainer
