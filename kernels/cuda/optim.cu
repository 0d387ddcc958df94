// CUDA AdamW over every parameter in one launch (fp32, decoupled weight decay, bias corrections
// computed on the host in double), the deterministic per-parameter sums of squares, and the
// device-side end of a step (global norm, clip factor, non-finite skip).
#include "kernels/cuda/optim.h"

#include <cmath>

#include "kernels/cuda/ops_common.cuh"

namespace s6::kernels::cuda {

namespace {

using namespace detail;

// PyTorch's AdamW for element i, in fp32 with explicit rounding (matches kernels/cpu/optim.h).
__device__ __forceinline__ void adamw_element(float* param, float* exp_avg, float* exp_avg_sq,
                                              const float* grad, int64_t i, float lr, float b1, float b2,
                                              float eps, float decay, float bc1, float bc2, float gs) {
  const float g = __fmul_rn(grad[i], gs);
  float w = param[i];
  w = __fsub_rn(w, __fmul_rn(decay, w));
  const float m = __fadd_rn(__fmul_rn(b1, exp_avg[i]), __fmul_rn(1.f - b1, g));
  const float v = __fadd_rn(__fmul_rn(b2, exp_avg_sq[i]), __fmul_rn(__fmul_rn(1.f - b2, g), g));
  exp_avg[i] = m;
  exp_avg_sq[i] = v;
  const float denom = __fadd_rn(__fsqrt_rn(__fdiv_rn(v, bc2)), eps);
  w = __fsub_rn(w, __fdiv_rn(__fmul_rn(lr, __fdiv_rn(m, bc1)), denom));
  param[i] = w;
}

// One thread: the same double arithmetic, in the same order, as AdamW::gradient_norm + clip_scale.
__global__ void finish_norm_kernel(DeviceStepStatus* status, const float* sumsq, int64_t count,
                                   const float* loss, double max_norm) {
  double total = 0;
  for (int64_t k = 0; k < count; ++k) total += static_cast<double>(sumsq[k]);
  const double norm = sqrt(total);
  const double l = static_cast<double>(loss[0]);
  status->loss = l;
  status->norm = norm;
  const double scale = (max_norm <= 0 || !(norm > max_norm)) ? 1.0 : max_norm / (norm + 1e-6);
  status->scale = static_cast<float>(scale);
  status->skip = (isfinite(l) && isfinite(norm)) ? 0 : 1;
}

__global__ void sumsq_chunks_kernel(float* partial, const MultiTensorEntry* entries,
                                    const MultiTensorChunk* chunks) {
  __shared__ float scratch[32];
  const MultiTensorChunk c = chunks[blockIdx.x];
  const MultiTensorEntry& e = entries[c.entry];
  const int64_t end = c.start + kMultiTensorChunk < e.numel ? c.start + kMultiTensorChunk : e.numel;
  float acc = 0.f;
  for (int64_t i = c.start + threadIdx.x; i < end; i += blockDim.x) acc = fmaf(e.grad[i], e.grad[i], acc);
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

// A warp per entry: its chunks' partials summed in chunk order by every lane, read 32 at a time
// (one coalesced load; an embedding's thousands of chunks read one dependent load at a time took
// a millisecond).
__global__ void sumsq_entries_kernel(float* sumsq, const float* partial, const MultiTensorEntry* entries,
                                     int64_t num_entries, const MultiTensorChunk* chunks, int64_t num_chunks) {
  const int64_t k = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (k >= num_entries) return;  // whole warps
  // Entries' chunks are consecutive and in entry order: find this entry's first chunk.
  int64_t lo = 0, hi = num_chunks;
  while (lo < hi) {
    const int64_t mid = (lo + hi) / 2;
    if (chunks[mid].entry < k) lo = mid + 1;
    else hi = mid;
  }
  const int64_t end = lo + (entries[k].numel + kMultiTensorChunk - 1) / kMultiTensorChunk;
  float acc = 0.f;
  for (int64_t c0 = lo; c0 < end; c0 += 32) {
    const float v = c0 + lane < end ? partial[c0 + lane] : 0.f;
    const int n = end - c0 < 32 ? static_cast<int>(end - c0) : 32;
    for (int j = 0; j < n; ++j) acc += __shfl_sync(0xffffffffu, v, j);
  }
  if (lane == 0) sumsq[entries[k].slot] = acc;
}

__global__ void adamw_chunks_kernel(const MultiTensorEntry* entries, const MultiTensorChunk* chunks, float b1,
                                    float b2, float eps, const DeviceAdamWScalars* sc,
                                    const DeviceStepStatus* status) {
  if (status->skip) return;
  const MultiTensorChunk c = chunks[blockIdx.x];
  const MultiTensorEntry& e = entries[c.entry];
  const int64_t end = c.start + kMultiTensorChunk < e.numel ? c.start + kMultiTensorChunk : e.numel;
  const float gs = status->scale, lr = sc->lr, decay = e.decayed ? sc->lr_times_decay : 0.f;
  const float bc1 = sc->bias_correction1, bc2 = sc->bias_correction2;
  for (int64_t i = c.start + threadIdx.x; i < end; i += blockDim.x)
    adamw_element(e.param, e.exp_avg, e.exp_avg_sq, e.grad, i, lr, b1, b2, eps, decay, bc1, bc2, gs);
}

}  // namespace

void append_multi_tensor_chunks(std::vector<MultiTensorChunk>& chunks, int64_t index, int64_t numel) {
  for (int64_t start = 0; start < numel; start += kMultiTensorChunk)
    chunks.push_back(MultiTensorChunk{index, start});
}

void sum_of_squares_multi(float* sumsq, float* partial, const MultiTensorEntry* entries, int64_t num_entries,
                          const MultiTensorChunk* chunks, int64_t num_chunks, void* stream) {
  if (num_entries == 0) return;
  S6_CHECK(num_chunks > 0 && num_chunks < (1LL << 31), "sum_of_squares_multi: {} chunks", num_chunks);
  sumsq_chunks_kernel<<<static_cast<unsigned>(num_chunks), 256, 0, as_stream(stream)>>>(partial, entries,
                                                                                        chunks);
  sumsq_entries_kernel<<<blocks_for(num_entries * 32, 128), 128, 0, as_stream(stream)>>>(
      sumsq, partial, entries, num_entries, chunks, num_chunks);
  check_launch("sum_of_squares_multi");
}

void adamw_multi(const MultiTensorEntry* entries, const MultiTensorChunk* chunks, int64_t num_chunks,
                 const AdamWParams& c, const DeviceAdamWScalars* scalars, const DeviceStepStatus* status,
                 void* stream) {
  if (num_chunks == 0) return;
  adamw_chunks_kernel<<<static_cast<unsigned>(num_chunks), 256, 0, as_stream(stream)>>>(
      entries, chunks, static_cast<float>(c.beta1), static_cast<float>(c.beta2), static_cast<float>(c.eps),
      scalars, status);
  check_launch("adamw_multi");
}

DeviceAdamWScalars adamw_device_scalars(const AdamWParams& p) {
  DeviceAdamWScalars s;
  s.lr = static_cast<float>(p.lr);
  s.bias_correction1 = static_cast<float>(1.0 - std::pow(p.beta1, static_cast<double>(p.step)));
  s.bias_correction2 = static_cast<float>(1.0 - std::pow(p.beta2, static_cast<double>(p.step)));
  s.lr_times_decay = static_cast<float>(p.lr * p.weight_decay);
  return s;
}

void finish_gradient_norm(DeviceStepStatus* status, const float* sumsq, int64_t count, const float* loss,
                          double max_norm, void* stream) {
  finish_norm_kernel<<<1, 1, 0, as_stream(stream)>>>(status, sumsq, count, loss, max_norm);
  check_launch("finish_gradient_norm");
}

}  // namespace s6::kernels::cuda
