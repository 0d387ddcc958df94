// CUDA AdamW (fp32, decoupled weight decay, bias corrections computed on the host in double),
// deterministic sum of squares for the global gradient norm, and the clip coefficient.
#include "kernels/cuda/optim.h"

#include <cmath>

#include "kernels/cuda/ops_common.cuh"

namespace s6::kernels::cuda {

namespace {

using namespace detail;

__global__ void adamw_kernel(float* param, float* exp_avg, float* exp_avg_sq, const float* grad,
                             int64_t n, float lr, float b1, float b2, float eps, float decay,
                             float bc1, float bc2, float host_scale, const float* grad_scale) {
  const float gs = grad_scale ? __fmul_rn(host_scale, grad_scale[0]) : host_scale;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
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
}

__global__ void clip_kernel(float* coef, float* norm, const float* sumsq, int64_t count,
                            float max_norm) {
  __shared__ float scratch[32];
  float acc = 0.f;
  for (int64_t k = threadIdx.x; k < count; k += blockDim.x) acc += sumsq[k];
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) {
    const float total = sqrtf(acc);
    if (norm) norm[0] = total;
    const float c = max_norm / (total + 1e-6f);
    coef[0] = c < 1.f ? c : 1.f;
  }
}

}  // namespace

void adamw(float* param, float* exp_avg, float* exp_avg_sq, const float* grad, int64_t n,
           const AdamWParams& hp, void* stream) {
  adamw(param, exp_avg, exp_avg_sq, grad, n, hp, nullptr, stream);
}

void adamw(float* param, float* exp_avg, float* exp_avg_sq, const float* grad, int64_t n,
           const AdamWParams& p, const float* grad_scale, void* stream) {
  S6_CHECK(n >= 0 && p.step >= 1, "adamw_step: bad size {} or step {}", n, p.step);
  if (n == 0) return;
  const float bc1 = static_cast<float>(1.0 - std::pow(p.beta1, static_cast<double>(p.step)));
  const float bc2 = static_cast<float>(1.0 - std::pow(p.beta2, static_cast<double>(p.step)));
  adamw_kernel<<<blocks_for(n, 256), 256, 0, as_stream(stream)>>>(
      param, exp_avg, exp_avg_sq, grad, n, static_cast<float>(p.lr), static_cast<float>(p.beta1),
      static_cast<float>(p.beta2), static_cast<float>(p.eps),
      static_cast<float>(p.lr * p.weight_decay), bc1, bc2, static_cast<float>(p.grad_scale),
      grad_scale);
  check_launch("adamw_step");
}

template <typename T>
void sum_of_squares_device(float* out, const T* x, int64_t n, void* stream) {
  S6_CHECK(n >= 0, "sum_of_squares: negative size {}", n);
  launch_reduce_all(out, dev(x), n, Square{}, 1.f, as_stream(stream));
  check_launch("sum_of_squares");
}

double sum_of_squares(const float* x, int64_t n, void* stream) {
  Scratch out(sizeof(float));
  sum_of_squares_device(out.as<float>(), x, n, stream);
  float host = 0.f;
  cudaError_t err = cudaMemcpyAsync(&host, out.ptr, sizeof(float), cudaMemcpyDeviceToHost,
                                    as_stream(stream));
  if (err == cudaSuccess) err = cudaStreamSynchronize(as_stream(stream));
  S6_CHECK(err == cudaSuccess, "sum_of_squares: {}", cudaGetErrorString(err));
  return host;
}

void clip_coefficient(float* coef, float* norm, const float* sumsq, int64_t count, double max_norm,
                      void* stream) {
  S6_CHECK(count >= 0 && max_norm > 0, "clip_coefficient: bad count {} or max_norm {}", count,
           max_norm);
  clip_kernel<<<1, 1024, 0, as_stream(stream)>>>(coef, norm, sumsq, count,
                                                 static_cast<float>(max_norm));
  check_launch("clip_coefficient");
}

template void sum_of_squares_device<float>(float*, const float*, int64_t, void*);
template void sum_of_squares_device<BFloat16>(float*, const BFloat16*, int64_t, void*);

}  // namespace s6::kernels::cuda
