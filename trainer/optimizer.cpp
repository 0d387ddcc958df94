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

AdamW::AdamW(std::vector<NamedParameter>& params, const OptimConfig& config)
    : params_(params), config_(config) {
  for (const NamedParameter& p : params_) {
    S6_CHECK(p.tensor.dtype() == DType::Float32, "AdamW: parameter {} is {}, expected float32", p.name,
             p.tensor.describe());
    exp_avg_.push_back(Tensor::zeros_like(p.tensor));
    exp_avg_sq_.push_back(Tensor::zeros_like(p.tensor));
  }
}

GradientNorm AdamW::gradient_norm() const {
  // Per-parameter sums of squares (on the device for CUDA, one copy back), summed on the host
  // in parameter order so the result is deterministic and the culprit of a NaN can be named.
  std::vector<double> sums(params_.size(), 0.0);
#ifdef S6_WITH_CUDA
  if (!params_.empty() && params_[0].tensor.is_cuda()) {
    Tensor partial = Tensor::zeros({static_cast<int64_t>(params_.size())}, DType::Float32, Device::CUDA);
    for (size_t i = 0; i < params_.size(); ++i) {
      Tensor g = params_[i].tensor.grad();
      if (g.defined())
        kernels::cuda::sum_of_squares_device<float>(partial.data<float>() + i, g.data<float>(), g.numel(),
                                          cuda::current_stream());
    }
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
  GradientNorm result;
  double total = 0;
  for (size_t i = 0; i < params_.size(); ++i) {
    if (!std::isfinite(sums[i]) && result.first_nonfinite.empty()) result.first_nonfinite = params_[i].name;
    total += sums[i];
  }
  result.norm = std::sqrt(total);
  return result;
}

void AdamW::step(double lr, double grad_scale) {
  ++step_count_;
  kernels::AdamWParams hp;
  hp.lr = lr;
  hp.beta1 = config_.beta1;
  hp.beta2 = config_.beta2;
  hp.eps = config_.eps;
  hp.step = step_count_;
  hp.grad_scale = grad_scale;
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor& p = params_[i].tensor;
    Tensor g = p.grad();
    if (!g.defined()) continue;  // a parameter the loss did not reach keeps its value and moments
    hp.weight_decay = params_[i].weight_decay ? config_.weight_decay : 0.0;
#ifdef S6_WITH_CUDA
    if (p.is_cuda()) {
      kernels::cuda::adamw(p.data<float>(), exp_avg_[i].data<float>(), exp_avg_sq_[i].data<float>(),
                           g.data<float>(), p.numel(), hp, cuda::current_stream());
      continue;
    }
#endif
    kernels::cpu::adamw(p.data<float>(), exp_avg_[i].data<float>(), exp_avg_sq_[i].data<float>(),
                        g.data<float>(), p.numel(), hp);
  }
}

void AdamW::zero_grad() {
  for (NamedParameter& p : params_) p.tensor.set_grad(Tensor());
}

}  // namespace s6::trainer
