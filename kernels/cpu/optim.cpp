// CPU AdamW (fp32, PyTorch's decoupled weight decay) and a deterministic sum of squares.
#include "kernels/cpu/optim.h"

#include <cmath>
#include <vector>

namespace s6::kernels::cpu {

void adamw(float* param, float* exp_avg, float* exp_avg_sq, const float* grad, int64_t n,
           const AdamWParams& p) {
  const float grad_scale = static_cast<float>(p.grad_scale);
  const float lr = static_cast<float>(p.lr), b1 = static_cast<float>(p.beta1), b2 = static_cast<float>(p.beta2),
              eps = static_cast<float>(p.eps);
  const float decay = static_cast<float>(p.lr * p.weight_decay);
  const float bc1 = static_cast<float>(1.0 - std::pow(p.beta1, static_cast<double>(p.step)));
  const float bc2 = static_cast<float>(1.0 - std::pow(p.beta2, static_cast<double>(p.step)));
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    const float g = grad[i] * grad_scale;
    float w = param[i];
    w -= decay * w;
    const float m = b1 * exp_avg[i] + (1.f - b1) * g;
    const float v = b2 * exp_avg_sq[i] + (1.f - b2) * g * g;
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
    w -= lr * (m / bc1) / (std::sqrt(v / bc2) + eps);
    param[i] = w;
  }
}

double sum_of_squares(const float* x, int64_t n) {
  constexpr int64_t kBlock = 4096;
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<double> partial(static_cast<size_t>(blocks), 0.0);
#pragma omp parallel for if (n > 65536)
  for (int64_t b = 0; b < blocks; ++b) {
    double acc = 0;
    const int64_t end = (b + 1) * kBlock < n ? (b + 1) * kBlock : n;
    for (int64_t i = b * kBlock; i < end; ++i) acc += static_cast<double>(x[i]) * x[i];
    partial[b] = acc;
  }
  double total = 0;
  for (double v : partial) total += v;
  return total;
}

}  // namespace s6::kernels::cpu
