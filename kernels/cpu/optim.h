// CPU optimizer kernels: the AdamW update (PyTorch's formula, decoupled weight decay) on fp32
// parameters and state, and the deterministic sum of squares behind a global gradient norm.
#pragma once
#include <cstdint>

namespace s6::kernels {

// Hyper-parameters of one AdamW step (shared by the CPU and CUDA kernels).
struct AdamWParams {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  int64_t step = 1;         // the step being taken, counted from 1 (bias corrections use beta^step)
  double grad_scale = 1.0;  // multiplies every gradient first (gradient clipping)
};

}  // namespace s6::kernels

namespace s6::kernels::cpu {

// For each i, with g = grad[i] * grad_scale:
//   p -= lr * wd * p;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
//   p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps).
// Arithmetic in fp32 (bias corrections computed in double, then rounded), like the CUDA kernel.
void adamw(float* param, float* exp_avg, float* exp_avg_sq, const float* grad, int64_t n,
           const AdamWParams& hp);

// Sum of x[i]^2 in double over fixed blocks summed in order (deterministic).
double sum_of_squares(const float* x, int64_t n);

}  // namespace s6::kernels::cpu
