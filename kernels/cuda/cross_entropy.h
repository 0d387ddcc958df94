// CUDA softmax cross-entropy fused with its backward (softmax recomputed from a saved per-row
// log-sum-exp). logits (rows, vocab) float or s6::BFloat16 (math in fp32); targets int32/int64.
// No host synchronisation: the mean loss, the counted rows and the backward scale stay on the
// device. The loss and its incoming gradient are float32 for every logits type (a bf16 loss would
// keep three significant digits). Bad targets (not ignore_index and outside [0, vocab)) are recorded in
// error_info (device int64[4] = {1, row, target, vocab}; may be null) and make the loss NaN.
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace s6::kernels::cuda {

// loss[0] = (sum of row losses over counted rows) / counted (0 when none); counted[0] = number of
// rows whose target is not ignore_index; lse[r] = log-sum-exp of row r (saved for backward).
// row_loss is scratch of `rows` floats. Row losses are summed in a fixed order (deterministic).
template <typename T, typename I>
void cross_entropy_fwd(float* loss, int32_t* counted, float* lse, int64_t* error_info, const T* logits,
                       const I* targets, int64_t rows, int64_t vocab, int64_t ignore_index, void* stream);

// dlogits = (softmax - onehot(target)) * grad_loss[0] / counted[0] for counted rows, 0 otherwise.
// grad_loss is the device scalar gradient of the loss (float32).
template <typename T, typename I>
void cross_entropy_bwd(T* dlogits, const T* logits, const I* targets, const float* lse, const float* grad_loss,
                       const int32_t* counted, int64_t rows, int64_t vocab, int64_t ignore_index, void* stream);

}  // namespace s6::kernels::cuda
