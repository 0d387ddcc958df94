// CPU embedding lookup and its deterministic scatter-add backward; ids are int32 or int64.
#pragma once
#include <cstdint>

namespace s6::kernels::cpu {

// out[i, :] = weight[ids[i], :]; ids already validated to lie in [0, vocab).
template <typename T, typename I>
void embedding_fwd(T* out, const I* ids, const T* weight, int64_t count, int64_t width);

// dweight (vocab, width) = sum over i with ids[i] == v of dout[i, :]; rows summed in id order.
template <typename T, typename I>
void embedding_bwd(T* dweight, const T* dout, const I* ids, int64_t count, int64_t vocab, int64_t width);

}  // namespace s6::kernels::cpu
