// CPU softmax cross-entropy over rows of logits, fused with its backward (softmax recomputed).
#pragma once
#include <cstdint>

namespace s6::kernels::cpu {

// Returns the summed loss over rows whose target != ignore_index and writes that row count.
// Targets are already validated.
template <typename T, typename I> double cross_entropy_fwd(const T* logits, const I* targets, int64_t rows,
                                                           int64_t vocab, int64_t ignore_index,
                                                           int64_t* counted);

// dlogits = (softmax - onehot(target)) * scale for counted rows, 0 for ignored rows.
template <typename T, typename I> void cross_entropy_bwd(T* dlogits, const T* logits, const I* targets,
                                                         int64_t rows, int64_t vocab, int64_t ignore_index,
                                                         double scale);

}  // namespace s6::kernels::cpu
