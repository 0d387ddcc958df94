// Device task generators (see data/device_sampling.h). Each reproduces its host generator's draws in
// stream order; only the placement of the results is parallel.
#include "data/device_sampling.h"

#include <cuda_runtime.h>

#include "core/cuda_runtime.h"
#include "core/error.h"

namespace s6::data::device {

namespace {

constexpr unsigned kFull = 0xffffffffu;
constexpr int kWarpsPerBlock = 4;
constexpr int kCopyingThreads = 256;

// Writes a lane's `count` accepted draws after the `have` already placed (lanes in order), keeping
// those below `limit`; returns the warp's new total.
__device__ int64_t place_draws(int32_t* dst, int64_t have, int64_t limit, const uint32_t (&v)[4], int count,
                               int lane) {
  int incl = count;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int n = __shfl_up_sync(kFull, incl, o);
    if (lane >= o) incl += n;
  }
  const int64_t at = have + incl - count;
  for (int j = 0; j < count; ++j)
    if (at + j < limit) dst[at + j] = static_cast<int32_t>(v[j]);
  return have + __shfl_sync(kFull, incl, 31);
}

__global__ void induction_kernel(DeviceBatch out, InductionSpec spec, uint64_t key, const uint64_t* batch_index,
                                 uint64_t first_example) {
  const int lane = threadIdx.x & 31;
  const int64_t e = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  if (e >= out.batch_size) return;  // whole warps
  const int64_t L = spec.seq_len, T = L - 1;
  int32_t* in = out.inputs + e * L;
  int32_t* tgt = out.targets + e * L;
  int32_t* ev = out.eval_targets != out.targets ? out.eval_targets + e * L : nullptr;
  // Every lane makes the trigger draw (the same one), so all hold the stream's position after it.
  ExampleRng rng(key, *batch_index, first_example + static_cast<uint64_t>(e));
  const int64_t p = rng.below(spec.trigger);
  const Bounded& ord = spec.ordinary;
  int64_t have = 0;
  uint32_t v[4];
  if (ord.small) {  // bytes left over from the trigger's last word come first
    const bool ok = lane < rng.pending_bytes() && ord.accept((rng.pending_bits() >> (8 * lane)) & 0xffu, v[0]);
    have = place_draws(in, have, T, v, ok ? 1 : 0, lane);
  }
  for (uint64_t w = rng.next_word(); have < T; w += 32) {
    const uint32_t word = rng.word_at(w + static_cast<uint64_t>(lane));
    int count = 0;
    if (ord.small) {
#pragma unroll
      for (int b = 0; b < 4; ++b)
        if (ord.accept((word >> (8 * b)) & 0xffu, v[count])) ++count;
    } else {
      count = ord.accept(word, v[0]) ? 1 : 0;
    }
    have = place_draws(in, have, T, v, count, lane);
  }
  __syncwarp();
  const int32_t value = in[p + 1];
  __syncwarp();
  if (lane == 0) in[p] = in[T] = spec.copy_prefix;
  __syncwarp();
  for (int64_t i = lane; i < T; i += 32) {
    const int32_t t = spec.loss_all ? in[i + 1] : kIgnoreIndex;
    tgt[i] = t;
    if (ev) ev[i] = spec.loss_all ? kIgnoreIndex : t;
  }
  if (lane == 0) {
    tgt[T] = value;
    if (ev) ev[T] = value;
  }
}

__global__ void copying_kernel(DeviceBatch out, CopyingSpec spec, uint64_t key, const uint64_t* batch_index,
                               uint64_t first_example) {
  extern __shared__ int32_t smem[];
  const int64_t e = blockIdx.x, L = spec.seq_len, M = spec.num_tokens, region = L - M;
  int32_t* pos = smem;     // in draw order
  int32_t* tok = pos + M;  // data token i goes to the i-th smallest position
  int32_t* sorted = tok + M;
  int32_t* in = out.inputs + e * L;
  int32_t* tgt = out.targets + e * L;
  int32_t* ev = out.eval_targets != out.targets ? out.eval_targets + e * L : nullptr;
  if (threadIdx.x < 32) {  // warp 0 draws in lockstep; its lanes share the search of Floyd's set
    const int lane = threadIdx.x;
    ExampleRng rng(key, *batch_index, first_example + static_cast<uint64_t>(e));
    for (int64_t i = 0; i < M; ++i) {
      int32_t at = static_cast<int32_t>(i);
      if (spec.selective) {  // Floyd's algorithm: j runs over region - M .. region - 1
        const int64_t j = region - M + i;
        const int32_t t = static_cast<int32_t>(rng.below(static_cast<uint32_t>(j + 1)));
        bool seen = false;
        for (int64_t k = lane; k < i; k += 32) seen |= pos[k] == t;
        at = __any_sync(kFull, seen) ? static_cast<int32_t>(j) : t;
      }
      if (lane == 0) pos[i] = at;
      __syncwarp();
    }
    for (int64_t i = 0; i < M; ++i) {
      const int32_t t = 1 + static_cast<int32_t>(rng.below(spec.data_token));
      if (lane == 0) tok[i] = t;
    }
  }
  __syncthreads();
  for (int64_t i = threadIdx.x; i < M; i += blockDim.x) {  // the positions are distinct
    int64_t rank = 0;
    for (int64_t k = 0; k < M; ++k) rank += pos[k] < pos[i];
    sorted[rank] = pos[i];
  }
  for (int64_t i = threadIdx.x; i < L; i += blockDim.x) {
    in[i] = i < region ? 0 : spec.marker;
    const int32_t t = i < region ? kIgnoreIndex : tok[i - region];
    tgt[i] = t;
    if (ev) ev[i] = t;
  }
  __syncthreads();
  for (int64_t i = threadIdx.x; i < M; i += blockDim.x) in[sorted[i]] = tok[i];
}

void check_launch(const char* what) {
  const cudaError_t err = cudaGetLastError();
  S6_CHECK(err == cudaSuccess, "{}: kernel launch failed: {}", what, cudaGetErrorString(err));
}

}  // namespace

void generate_induction(const DeviceBatch& out, const InductionSpec& spec, uint64_t key,
                        const uint64_t* batch_index, uint64_t first_example) {
  const int64_t blocks = (out.batch_size + kWarpsPerBlock - 1) / kWarpsPerBlock;
  induction_kernel<<<static_cast<unsigned>(blocks), 32 * kWarpsPerBlock, 0,
                     static_cast<cudaStream_t>(cuda::current_stream())>>>(out, spec, key, batch_index,
                                                                          first_example);
  check_launch("induction_heads.sample_on_device");
}

void generate_copying(const DeviceBatch& out, const CopyingSpec& spec, uint64_t key,
                      const uint64_t* batch_index, uint64_t first_example) {
  const size_t smem = 3 * static_cast<size_t>(spec.num_tokens) * sizeof(int32_t);
  copying_kernel<<<static_cast<unsigned>(out.batch_size), kCopyingThreads, smem,
                   static_cast<cudaStream_t>(cuda::current_stream())>>>(out, spec, key, batch_index,
                                                                        first_example);
  check_launch("copying.sample_on_device");
}

}  // namespace s6::data::device
