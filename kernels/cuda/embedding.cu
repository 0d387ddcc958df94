// CUDA embedding: gather with on-device id validation; deterministic backward by ownership. A
// block owns kRows vocabulary rows x kCols columns and a chunk of positions: it scans the ids of
// its chunk in order, compacts the positions whose id it owns (ballot + prefix, order kept) and
// adds those gradient rows into shared-memory accumulators. Several chunks (small vocabularies)
// write fp32 partials that a second pass sums in chunk order. No float atomics anywhere.
#include "kernels/cuda/embedding.h"

#include "kernels/cuda/ops_common.cuh"

namespace s6::kernels::cuda {

namespace {

using namespace detail;

constexpr int kRows = 32;                       // vocabulary rows per block
constexpr int kCols = 128;                      // columns per block (= threads)
constexpr int64_t kPartialBudget = 16LL << 20;  // floats of partials at most (64 MiB)

template <typename D, typename I> __global__ void embedding_fwd_kernel(D* out, int64_t* err, const I* ids,
                                                                       const D* weight, int64_t count,
                                                                       int64_t vocab, int64_t width) {
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < count * width;
       e += (int64_t)gridDim.x * blockDim.x) {
    const int64_t i = e / width, c = e % width;
    const int64_t id = static_cast<int64_t>(ids[i]);
    if (id < 0 || id >= vocab) {
      if (c == 0) flag_index_error(err, i, id, vocab);
      store(out + e, __int_as_float(0x7fc00000));  // NaN
    } else {
      out[e] = weight[id * width + c];
    }
  }
}

template <typename D, typename I>
__global__ void embedding_bwd_kernel(float* partial, D* dweight, const D* dout, const I* ids, int64_t count,
                                     int64_t vocab, int64_t width, int64_t per_chunk) {
  __shared__ float acc[kRows][kCols];
  __shared__ int list_pos[kCols];
  __shared__ int list_row[kCols];
  __shared__ int warp_counts[kCols / 32];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t c = blockIdx.x * (int64_t)kCols + tid;
  const int64_t v0 = blockIdx.y * (int64_t)kRows;
  const int64_t p0 = blockIdx.z * per_chunk;
  const int64_t p1 = p0 + per_chunk < count ? p0 + per_chunk : count;
#pragma unroll
  for (int r = 0; r < kRows; ++r) acc[r][tid] = 0.f;
  for (int64_t base = p0; base < p1; base += kCols) {
    const int64_t i = base + tid;
    int64_t id = i < p1 ? static_cast<int64_t>(ids[i]) : -1;
    const bool mine = id >= v0 && id < v0 + kRows && id < vocab;
    const unsigned ballot = __ballot_sync(0xffffffffu, mine);
    if (lane == 0) warp_counts[warp] = __popc(ballot);
    __syncthreads();
    int offset = 0, total = 0;
#pragma unroll
    for (int w = 0; w < kCols / 32; ++w) {
      if (w < warp) offset += warp_counts[w];
      total += warp_counts[w];
    }
    if (mine) {
      const int k = offset + __popc(ballot & ((1u << lane) - 1u));
      list_pos[k] = static_cast<int>(i - p0);
      list_row[k] = static_cast<int>(id - v0);
    }
    __syncthreads();
    if (c < width)
      for (int k = 0; k < total; ++k) acc[list_row[k]][tid] += to_acc(dout[(p0 + list_pos[k]) * width + c]);
    __syncthreads();
  }
  if (c >= width) return;
  for (int r = 0; r < kRows && v0 + r < vocab; ++r) {
    if (partial) partial[(blockIdx.z * vocab + v0 + r) * width + c] = acc[r][tid];
    else store(dweight + (v0 + r) * width + c, acc[r][tid]);
  }
}

}  // namespace

template <typename T, typename I> void embedding_fwd(T* out, int64_t* error_info, const I* ids, const T* weight,
                                                     int64_t count, int64_t vocab, int64_t width,
                                                     void* stream) {
  S6_CHECK(count >= 0 && vocab >= 0 && width >= 0, "embedding_fwd: bad sizes ({}, {}, {})", count, vocab,
           width);
  if (count * width == 0) return;
  embedding_fwd_kernel<<<blocks_for(count * width, 256), 256, 0, as_stream(stream)>>>(
      dev(out), error_info, ids, dev(weight), count, vocab, width);
  check_launch("embedding_fwd");
}

template <typename T, typename I> void embedding_bwd(T* dweight, const T* dout, const I* ids, int64_t count,
                                                     int64_t vocab, int64_t width, void* stream) {
  S6_CHECK(count >= 0 && vocab >= 0 && width >= 0, "embedding_bwd: bad sizes ({}, {}, {})", count, vocab,
           width);
  S6_CHECK(count < (1LL << 31), "embedding_bwd: {} positions exceed the int32 range", count);
  if (vocab * width == 0) return;
  cudaStream_t s = as_stream(stream);
  // Positions per chunk: at least 256, and few enough chunks that the partials fit the budget.
  int64_t max_chunks = kPartialBudget / (vocab * width);
  if (max_chunks > 1024) max_chunks = 1024;
  if (max_chunks < 1) max_chunks = 1;
  // Each block walks its positions one by one (accumulating into shared memory), so short
  // chunks keep small batches parallel: 32 positions at least.
  int64_t per = (count + max_chunks - 1) / max_chunks;
  if (per < 32) per = 32;
  const int64_t chunks = count > 0 ? (count + per - 1) / per : 1;
  S6_CHECK((vocab + kRows - 1) / kRows <= 65535, "embedding_bwd: vocabulary {} is too large", vocab);
  dim3 grid(static_cast<unsigned>((width + kCols - 1) / kCols),
            static_cast<unsigned>((vocab + kRows - 1) / kRows), static_cast<unsigned>(chunks));
  Scratch partial(chunks > 1 ? chunks * vocab * width * static_cast<int64_t>(sizeof(float)) : 0);
  embedding_bwd_kernel<<<grid, kCols, 0, s>>>(partial.as<float>(), dev(dweight), dev(dout), ids, count, vocab,
                                              width, per);
  check_launch("embedding_bwd");
  if (chunks > 1) {
    launch_colsum(dev(dweight), partial.as<float>(), chunks, vocab * width, s);
    check_launch("embedding_bwd (chunk reduction)");
  }
}

#define S6_INSTANTIATE(T, I)                                                                             \
  template void embedding_fwd<T, I>(T*, int64_t*, const I*, const T*, int64_t, int64_t, int64_t, void*); \
  template void embedding_bwd<T, I>(T*, const T*, const I*, int64_t, int64_t, int64_t, void*);
S6_INSTANTIATE(float, int32_t)
S6_INSTANTIATE(float, int64_t)
S6_INSTANTIATE(BFloat16, int32_t)
S6_INSTANTIATE(BFloat16, int64_t)
#undef S6_INSTANTIATE

}  // namespace s6::kernels::cuda
