// CUDA selective scan single-token step (recurrent inference): one thread per (batch, channel).
#include "kernels/cuda/scan_common.cuh"

namespace s6::kernels::cuda {

namespace {

// ---- single-token step ------------------------------------------------------------------------
template <typename T> __global__ void scan_step_kernel(T* out, float* state, const T* u, const T* delta,
                                                       const float* A, const T* Bm, const T* Cm,
                                                       const float* Dv, const T* z, const float* bias,
                                                       bool softplus, int64_t batch, int64_t dim, int N) {
  const int64_t r = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= batch * dim) return;
  const int64_t b = r / dim, d = r - b * dim;
  float v = to_f(delta[r]) + (bias ? bias[d] : 0.f);
  const float dt = (softplus && v <= 20.f) ? log1pf(expf(v)) : v;
  const float uv = to_f(u[r]);
  float* st = state + r * N;
  const float* Ad = A + d * N;
  const T* Bb = Bm + b * N;
  const T* Cb = Cm + b * N;
  float y = 0.f;
  for (int n = 0; n < N; ++n) {
    const float hn = fast_exp2(dt * Ad[n] * kLog2e) * st[n] + dt * to_f(Bb[n]) * uv;
    st[n] = hn;
    y += to_f(Cb[n]) * hn;
  }
  y += (Dv ? Dv[d] : 0.f) * uv;
  if (z) {
    const float zz = to_f(z[r]);
    y *= zz * sigmoid_f(zz);
  }
  out[r] = from_f<T>(y);
}

}  // namespace

void selective_scan_step(void* out, float* state, const void* u, const void* delta, const float* A,
                         const void* B, const void* C, const float* D, const void* z, const float* delta_bias,
                         bool delta_softplus, int64_t batch, int64_t dim, int64_t dstate, ScanDType dtype,
                         void* stream_ptr) {
  const char* what = "selective_scan_step (CUDA)";
  check_dims(what, batch, 1, dim, dstate);
  if (batch == 0 || dim == 0) return;
  S6_CHECK(out && state && u && delta && A && B && C, "{}: out, state, u, delta, A, B and C are required",
           what);
  const size_t es = dtype == ScanDType::Float32 ? 4 : 2;
  for (auto [name, p] :
       std::initializer_list<NamedPtr>{{"out", out}, {"u", u}, {"delta", delta}, {"B", B}, {"C", C}, {"z", z}})
    if (p) check_aligned(what, name, p, es);
  cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  const int64_t rows = batch * dim;
  dispatch_dtype(dtype, [&](auto ttag) {
    using T = decltype(ttag);
    scan_step_kernel<T><<<static_cast<unsigned>((rows + 127) / 128), 128, 0, stream>>>(
        static_cast<T*>(out), state, static_cast<const T*>(u), static_cast<const T*>(delta), A,
        static_cast<const T*>(B), static_cast<const T*>(C), D, static_cast<const T*>(z), delta_bias,
        delta_softplus, batch, dim, static_cast<int>(dstate));
  });
  check_launch("selective_scan_step");
}

}  // namespace s6::kernels::cuda
