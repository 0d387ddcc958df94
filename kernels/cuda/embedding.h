// CUDA embedding lookup and its deterministic backward (no float atomics). ids are int32 or int64;
// T is float or s6::BFloat16. Ids are validated on the device: a bad id is recorded in
// error_info (device int64[4] = {1, position, id, vocab}; zeros when clean; may be null) and its
// output row is NaN, so nothing is read out of bounds and no host sync is needed.
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace s6::kernels::cuda {

// out[i, :] = weight[ids[i], :].
template <typename T, typename I> void embedding_fwd(T* out, int64_t* error_info, const I* ids, const T* weight,
                                                     int64_t count, int64_t vocab, int64_t width, void* stream);

// dweight (vocab, width) = sum over i with ids[i] == v of dout[i, :] (set, not accumulated).
// Each block owns a tile of (vocab rows x 128 columns) and a chunk of positions, adds the rows it
// owns in position order into shared memory; chunks are summed in order. Bad ids are skipped.
template <typename T, typename I> void embedding_bwd(T* dweight, const T* dout, const I* ids, int64_t count,
                                                     int64_t vocab, int64_t width, void* stream);

}  // namespace s6::kernels::cuda
