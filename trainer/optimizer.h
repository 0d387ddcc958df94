// AdamW with PyTorch's formula, parameter groups from each parameter's weight-decay flag, global
// gradient-norm clipping, and the learning-rate schedules (constant, warmup + cosine).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "kernels/cpu/optim.h"
#include "layers/mamba.h"
#include "trainer/config.h"

namespace s6::kernels::cuda {
struct DeviceAdamWScalars;
struct DeviceStepStatus;
}  // namespace s6::kernels::cuda

namespace s6::trainer {

// Learning rate for step index `step` (0-based) under the schedule.
double learning_rate(const OptimConfig& optim, const ScheduleConfig& schedule, int64_t total_steps,
                     int64_t step);

struct GradientNorm {
  double norm = 0;              // sqrt of the sum over every gradient of its squared entries
  std::string first_nonfinite;  // name of the first parameter whose gradient is not finite
};

class AdamW {
 public:
  AdamW(std::vector<NamedParameter>& params, const OptimConfig& config);
  ~AdamW();

  // Global L2 norm of all gradients (missing gradients count as zero).
  GradientNorm gradient_norm();
  // The same from per-parameter sums of squares already computed (in parameter order).
  GradientNorm norm_from_sums(const std::vector<double>& sums) const;
  // One update with learning rate lr; gradients are first scaled by grad_scale (clipping).
  void step(double lr, double grad_scale);
  void zero_grad();

  int64_t step_count() const { return step_count_; }
  void set_step_count(int64_t n) { step_count_ = n; }
  // First and second moments, one per parameter, in parameter order (for checkpoints).
  std::vector<Tensor>& exp_avg() { return exp_avg_; }
  std::vector<Tensor>& exp_avg_sq() { return exp_avg_sq_; }
  const std::vector<NamedParameter>& params() const { return params_; }
  // The hyper-parameters of update number `step` (from 1) at learning rate lr: this optimizer's
  // betas, eps and weight decay (for decayed parameters), no gradient scale.
  kernels::AdamWParams hyperparameters(double lr, int64_t step) const;

 private:
  // The training step's CUDA graph (trainer/train_step.cpp) records the update without host
  // synchronisation; nothing else needs these.
  friend class StepGraph;
  // CUDA parameters: the sums of squares of the gradients into sumsq (device, one float per
  // parameter; parameters without a gradient are left as they are), and the update with the
  // per-step scalars and the clip scale / skip flag read from device memory. Each launches one
  // kernel (two for the sums) over every parameter. Inside a capture (capturing = true) the
  // parameter table is uploaded later, by upload_pending_tables().
  void launch_sum_of_squares(float* sumsq, bool capturing);
  void launch_update(const kernels::cuda::DeviceAdamWScalars* scalars,
                     const kernels::cuda::DeviceStepStatus* status, bool capturing);
  void upload_pending_tables();
  struct DeviceTables;
  DeviceTables& refresh_tables(bool capturing);
  std::unique_ptr<DeviceTables> device_;
  std::vector<NamedParameter>& params_;
  OptimConfig config_;
  std::vector<Tensor> exp_avg_, exp_avg_sq_;
  int64_t step_count_ = 0;
};

// Scale factor that brings the global norm down to max_norm (1 when clipping is off or not needed).
double clip_scale(double norm, double max_norm);

}  // namespace s6::trainer
