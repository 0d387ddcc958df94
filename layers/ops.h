// Differentiable ops: each call computes its result and, when an input requires grad, records one
// fused node on the tape. Layouts are channel-last: sequences are (batch, length, channels).
#pragma once
#include <algorithm>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "kernels/scan_params.h"

namespace s6 {

// ---- Fused model ops --------------------------------------------------------------------------
// x (..., in) W^T (out, in) + b (out) -> (..., out). bias may be undefined.
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());
// linear(x, weight, bias) split along its output features into contiguous parts of the given sizes
// (they add up to weight.size(0)): one tape node, no copies; equal to split(linear(...), sizes, -1).
std::vector<Tensor> linear_split(const Tensor& x, const Tensor& weight, const Tensor& bias,
                                 const std::vector<int64_t>& sizes);

// Depthwise causal conv over time with optional fused SiLU. x (B, L, D); weight (D, W) or the
// reference's (D, 1, W); bias (D) or undefined; initial_state (B, D, W-1): the inputs before t=0
// (zeros when undefined; never differentiated). Backward recomputes the pre-activation.
Tensor causal_conv1d(const Tensor& x, const Tensor& weight, const Tensor& bias, bool silu,
                     const Tensor& initial_state = Tensor());

// Selective scan (S6): out = (C.h + D u) * silu(z), h_t = exp(dt A) h_{t-1} + dt B_t u_t,
// dt = softplus(delta + delta_bias). u, delta, z (B, L, D); A (D, N); B, C (B, L, N); D and
// delta_bias (D). D, z, delta_bias may be undefined. Backward recomputes the states.
struct ScanOptions {
  bool delta_softplus = true;
  Tensor initial_state;  // (B, D, N), not differentiated; zeros when undefined
  bool return_final_state = false;
  // CUDA: the plan choices to force (layers/scan_plan.h); null takes the S6_SCAN_* environment's.
  // The plan is decided once per call and saved with the node for its backward.
  const kernels::ScanPlanOverrides* plan_overrides = nullptr;
};
struct ScanResult {
  Tensor out;
  Tensor final_state;  // (B, D, N) when requested; no gradient flows through it
};
Tensor selective_scan(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B, const Tensor& C,
                      const Tensor& D, const Tensor& z, const Tensor& delta_bias, bool delta_softplus = true);
ScanResult selective_scan_ex(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B,
                             const Tensor& C, const Tensor& D, const Tensor& z, const Tensor& delta_bias,
                             const ScanOptions& options);

// Fused residual add + RMSNorm (docs/model.md 1.5): s = x + residual (residual may be undefined),
// y = s / sqrt(mean(s^2) + eps) * weight. Returns {y, s}; s is the new residual stream. Mixed
// precision: a bf16 x over a float32 residual and weight gives a bf16 y and a float32 s (one pass,
// no separate casts); otherwise all inputs share one dtype.
std::pair<Tensor, Tensor> rmsnorm_add(const Tensor& x, const Tensor& residual, const Tensor& weight,
                                      double eps);

// Rows of weight (V, E) picked by integer ids (any shape) -> (ids..., E).
Tensor embedding(const Tensor& ids, const Tensor& weight);

// Mean softmax cross-entropy over the rows of logits (N, V) whose target (N, int) is not
// ignore_index; a scalar. When every row is ignored the loss is 0 (and so is its gradient).
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index = -100);

// Ids given to embedding and targets given to cross_entropy on a CUDA device are checked by the
// kernels themselves (no copy to the host per call): a bad one poisons the output with NaN and is
// recorded. This reads the record (waiting for the stream) and throws naming the first bad id,
// its position and the bound; call it where the host waits anyway, e.g. after reading the loss.
// On the CPU the ops check at the call and this does nothing.
void check_index_errors(Device device);

// ---- Elementwise (broadcasting binary ops; gradients summed back to each input's shape) --------
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor scale(const Tensor& x, double factor);
Tensor neg_exp(const Tensor& x);  // -exp(x): A = -exp(A_log)
Tensor exp(const Tensor& x);
Tensor silu(const Tensor& x);
Tensor softplus(const Tensor& x);  // log1p(exp(x)), linear above 20 like the reference
Tensor sum(const Tensor& x);       // all elements -> scalar
Tensor mean(const Tensor& x);

// ---- Shape ops (differentiable views or copies) -------------------------------------------------
Tensor reshape(const Tensor& x, const Shape& shape);
Tensor transpose(const Tensor& x, int64_t d0, int64_t d1);
Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length);
std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim);
Tensor contiguous(const Tensor& x);
Tensor expand(const Tensor& x, const Shape& shape);
Tensor to_dtype(const Tensor& x, DType dtype);

// Sums g over broadcast dimensions so it has `shape` (the one helper that undoes broadcasting).
Tensor sum_to_shape(const Tensor& g, const Shape& shape);

}  // namespace s6
