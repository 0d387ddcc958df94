// CUDA causal conv1d (+SiLU): forward, backward that recomputes the pre-activation, and the
// single-step state update for decoding. Channel-last: one thread owns one channel of a chunk of
// a chunk of timesteps (chunk_for) of one sequence, keeping a sliding window of width W in registers; adjacent
// threads own adjacent channels, so every load is coalesced. dweight/dbias: per-thread partials
// written to an fp32 (batch*chunks, dim*(W+1)) buffer, then summed in order (deterministic).
#include "kernels/cuda/causal_conv1d.h"

#include "kernels/cuda/ops_common.cuh"

namespace s6::kernels::cuda {

namespace {

using namespace detail;

constexpr int kThreads = 128;
// Steps whose inputs a thread loads before computing them: the loads of a group are in flight
// together (one at a time, each step waited on DRAM latency).
constexpr int kStepsPerLoad = 8;

// Timesteps per thread: 64, halved (down to 8) while the grid would leave the GPU mostly idle,
// since each thread walks its chunk sequentially (short batches are latency-bound otherwise).
int64_t chunk_for(int64_t batch, int64_t length, int64_t dim) {
  const int64_t channel_blocks = (dim + kThreads - 1) / kThreads;
  int64_t chunk = 64;
  while (chunk > 8 && channel_blocks * batch * ((length + chunk - 1) / chunk) < 512) chunk /= 2;
  return chunk;
}

template <int W, typename D> __device__ __forceinline__ float load_x(const D* x, const D* init, int64_t b,
                                                                     int64_t t, int64_t d, int64_t L,
                                                                     int64_t Dm) {
  if (t >= 0) return to_acc(x[(b * L + t) * Dm + d]);
  if (W == 1 || !init) return 0.f;
  return to_acc(init[(b * Dm + d) * (W - 1) + t + (W - 1)]);
}

// Shared by forward, backward and update: the recomputed pre-activation is bit-identical.
template <int W>
__device__ __forceinline__ float pre_act(const float (&wv)[W], const float (&win)[W], float bias) {
  float acc = bias;
#pragma unroll
  for (int w = 0; w < W; ++w) acc = __fmaf_rn(wv[w], win[w], acc);
  return acc;
}

__device__ __forceinline__ float sigmoid_f(float v) { return 1.f / (1.f + expf(-v)); }

template <int W, typename D> __global__ void conv_fwd_kernel(D* out, const D* x, const D* weight, const D* bias,
                                                             const D* init, bool silu, int64_t L, int64_t Dm,
                                                             int64_t chunk_len) {
  const int64_t d = blockIdx.x * (int64_t)kThreads + threadIdx.x;
  if (d >= Dm) return;
  const int64_t b = blockIdx.z, t0 = blockIdx.y * (int64_t)chunk_len;
  const int64_t t1 = t0 + chunk_len < L ? t0 + chunk_len : L;
  float wv[W], win[W];
#pragma unroll
  for (int w = 0; w < W; ++w) wv[w] = to_acc(weight[d * W + w]);
  const float bd = bias ? to_acc(bias[d]) : 0.f;
#pragma unroll
  for (int j = 0; j < W - 1; ++j) win[j] = load_x<W>(x, init, b, t0 - (W - 1) + j, d, L, Dm);
  for (int64_t tb = t0; tb < t1; tb += kStepsPerLoad) {
    float xs[kStepsPerLoad];
#pragma unroll
    for (int k = 0; k < kStepsPerLoad; ++k) xs[k] = tb + k < t1 ? to_acc(x[(b * L + tb + k) * Dm + d]) : 0.f;
#pragma unroll
    for (int k = 0; k < kStepsPerLoad; ++k) {
      if (tb + k >= t1) break;
      win[W - 1] = xs[k];
      const float p = pre_act<W>(wv, win, bd);
      store(out + (b * L + tb + k) * Dm + d, silu ? p * sigmoid_f(p) : p);
#pragma unroll
      for (int j = 0; j < W - 1; ++j) win[j] = win[j + 1];
    }
  }
}

template <int W, typename D> __global__ void conv_bwd_kernel(D* dx, float* partial, const D* dout, const D* x,
                                                             const D* weight, const D* bias, const D* init,
                                                             bool silu, int64_t L, int64_t Dm,
                                                             int64_t chunk_len) {
  const int64_t d = blockIdx.x * (int64_t)kThreads + threadIdx.x;
  if (d >= Dm) return;
  const int64_t b = blockIdx.z, chunk = blockIdx.y, t0 = chunk * (int64_t)chunk_len;
  const int64_t t1 = t0 + chunk_len < L ? t0 + chunk_len : L;
  float wv[W], win[W], dp[W], dw[W];
#pragma unroll
  for (int w = 0; w < W; ++w) {
    wv[w] = to_acc(weight[d * W + w]);
    dp[w] = 0.f;
    dw[w] = 0.f;
    win[w] = 0.f;
  }
  float db = 0.f;
  const float bd = bias ? to_acc(bias[d]) : 0.f;
#pragma unroll
  for (int j = 0; j < W - 1; ++j) win[j] = load_x<W>(x, init, b, t0 - (W - 1) + j, d, L, Dm);
  // dpre is needed up to t1 + W - 2 (dx of the chunk's last steps looks W - 1 steps ahead).
  const int64_t tend = t1 + W - 1 < L ? t1 + W - 1 : L;  // the last step read, plus one
  for (int64_t tb = t0; tb < t1 + W - 1; tb += kStepsPerLoad) {
    float xs[kStepsPerLoad], gs[kStepsPerLoad];
#pragma unroll
    for (int k = 0; k < kStepsPerLoad; ++k) {
      const bool in = tb + k < tend;
      xs[k] = in ? to_acc(x[(b * L + tb + k) * Dm + d]) : 0.f;
      gs[k] = in ? to_acc(dout[(b * L + tb + k) * Dm + d]) : 0.f;
    }
#pragma unroll
    for (int k = 0; k < kStepsPerLoad; ++k) {
      const int64_t tau = tb + k;
      if (tau >= t1 + W - 1) break;
      float dpre = 0.f;
      if (tau < L) {
        win[W - 1] = xs[k];
        const float g = gs[k];
        if (silu) {
          const float p = pre_act<W>(wv, win, bd);
          const float s = sigmoid_f(p);
          dpre = g * s * (1.f + p * (1.f - s));
        } else {
          dpre = g;
        }
        if (partial && tau < t1) {
#pragma unroll
          for (int w = 0; w < W; ++w) dw[w] = __fmaf_rn(win[w], dpre, dw[w]);
          db += dpre;
        }
#pragma unroll
        for (int j = 0; j < W - 1; ++j) win[j] = win[j + 1];
      }
#pragma unroll
      for (int j = 0; j < W - 1; ++j) dp[j] = dp[j + 1];
      dp[W - 1] = dpre;  // dp[j] = dpre(tau - (W-1) + j)
      const int64_t t = tau - (W - 1);
      if (dx && t >= t0) {
        float acc = 0.f;
#pragma unroll
        for (int w = 0; w < W; ++w) acc = __fmaf_rn(wv[w], dp[W - 1 - w], acc);
        store(dx + (b * L + t) * Dm + d, acc);
      }
    }
  }
  if (partial) {
    float* p = partial + ((b * gridDim.y + chunk) * Dm + d) * (W + 1);
#pragma unroll
    for (int w = 0; w < W; ++w) p[w] = dw[w];
    p[W] = db;
  }
}

// Splits the column sums (dim, W+1) of the partial buffer into dweight (dim, W) and dbias (dim).
template <int W, typename D>
__global__ void conv_split_kernel(D* dweight, D* dbias, const float* sums, int64_t Dm) {
  const int64_t cols = Dm * (W + 1);
  for (int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; c < cols;
       c += (int64_t)gridDim.x * blockDim.x) {
    const int64_t d = c / (W + 1), j = c % (W + 1);
    if (j < W) {
      if (dweight) store(dweight + d * W + j, sums[c]);
    } else if (dbias) {
      store(dbias + d, sums[c]);
    }
  }
}

template <int W, typename D> __global__ void conv_update_kernel(D* out, D* state, const D* x, const D* weight,
                                                                const D* bias, bool silu, int64_t batch,
                                                                int64_t Dm, int64_t x_stride) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < batch * Dm;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t b = i / Dm, d = i % Dm;
    D* st = state + i * W;
    float wv[W], win[W];
#pragma unroll
    for (int w = 0; w < W - 1; ++w) win[w] = to_acc(st[w + 1]);
    win[W - 1] = to_acc(x[b * x_stride + d]);
#pragma unroll
    for (int w = 0; w < W - 1; ++w) st[w] = st[w + 1];
    st[W - 1] = x[b * x_stride + d];
#pragma unroll
    for (int w = 0; w < W; ++w) wv[w] = to_acc(weight[d * W + w]);
    const float p = pre_act<W>(wv, win, bias ? to_acc(bias[d]) : 0.f);
    store(out + i, silu ? p * sigmoid_f(p) : p);
  }
}

template <typename Fn> void dispatch_width(int64_t width, const char* op, Fn&& fn) {
  switch (width) {
    case 1: fn(std::integral_constant<int, 1>{}); break;
    case 2: fn(std::integral_constant<int, 2>{}); break;
    case 3: fn(std::integral_constant<int, 3>{}); break;
    case 4: fn(std::integral_constant<int, 4>{}); break;
    default: S6_FAIL("{}: the CUDA kernel supports widths 1-4, got {}", op, width);
  }
}

void check_dims(const char* op, const ConvDims& dm) {
  S6_CHECK(dm.batch >= 0 && dm.length >= 0 && dm.dim >= 0, "{}: bad sizes ({}, {}, {})", op, dm.batch,
           dm.length, dm.dim);
  S6_CHECK(dm.batch <= 65535, "{}: batch {} exceeds 65535", op, dm.batch);
  S6_CHECK((dm.length + 63) / 64 <= 65535, "{}: length {} is too long", op, dm.length);
}

dim3 conv_grid(const ConvDims& dm, int64_t chunk) {
  return dim3(static_cast<unsigned>((dm.dim + kThreads - 1) / kThreads),
              static_cast<unsigned>((dm.length + chunk - 1) / chunk), static_cast<unsigned>(dm.batch));
}

}  // namespace

template <typename T> void causal_conv1d_fwd(T* out, const T* x, const T* weight, const T* bias,
                                             const T* initial_state, bool silu, const ConvDims& dims,
                                             void* stream) {
  check_dims("causal_conv1d_fwd", dims);
  if (dims.batch == 0 || dims.length == 0 || dims.dim == 0) return;
  dispatch_width(dims.width, "causal_conv1d_fwd", [&](auto wtag) {
    constexpr int W = decltype(wtag)::value;
    const int64_t chunk = chunk_for(dims.batch, dims.length, dims.dim);
    conv_fwd_kernel<W><<<conv_grid(dims, chunk), kThreads, 0, as_stream(stream)>>>(
        dev(out), dev(x), dev(weight), dev(bias), dev(initial_state), silu, dims.length, dims.dim, chunk);
  });
  check_launch("causal_conv1d_fwd");
}

template <typename T> void causal_conv1d_bwd(T* dx, T* dweight, T* dbias, const T* dout, const T* x,
                                             const T* weight, const T* bias, const T* initial_state, bool silu,
                                             const ConvDims& dims, void* stream) {
  check_dims("causal_conv1d_bwd", dims);
  if (!dx && !dweight && !dbias) return;
  cudaStream_t s = as_stream(stream);
  dispatch_width(dims.width, "causal_conv1d_bwd", [&](auto wtag) {
    constexpr int W = decltype(wtag)::value;
    const bool want_params = dweight || dbias;
    const int64_t chunk = chunk_for(dims.batch, dims.length, dims.dim);
    const int64_t chunks = (dims.length + chunk - 1) / chunk;
    const int64_t rows = dims.batch * chunks, cols = dims.dim * (W + 1);
    Scratch partial(want_params ? rows * cols * static_cast<int64_t>(sizeof(float)) : 0);
    if (rows > 0 && dims.dim > 0) {
      conv_bwd_kernel<W><<<conv_grid(dims, chunk), kThreads, 0, s>>>(
          dev(dx), partial.as<float>(), dev(dout), dev(x), dev(weight), dev(bias), dev(initial_state), silu,
          dims.length, dims.dim, chunk);
      check_launch("causal_conv1d_bwd");
    }
    if (want_params && cols > 0) {
      Scratch sums(cols * static_cast<int64_t>(sizeof(float)));
      launch_colsum(sums.as<float>(), partial.as<float>(), rows, cols, s);
      conv_split_kernel<W>
          <<<blocks_for(cols, 256), 256, 0, s>>>(dev(dweight), dev(dbias), sums.as<float>(), dims.dim);
      check_launch("causal_conv1d_bwd (weight reduction)");
    }
  });
}

template <typename T> void causal_conv1d_update(T* out, T* conv_state, const T* x, const T* weight,
                                                const T* bias, bool silu, int64_t batch, int64_t dim,
                                                int64_t width, int64_t x_batch_stride, void* stream) {
  S6_CHECK(batch >= 0 && dim >= 0 && x_batch_stride >= dim,
           "causal_conv1d_update: bad sizes (batch {}, dim {}, x stride {})", batch, dim, x_batch_stride);
  if (batch * dim == 0) return;
  dispatch_width(width, "causal_conv1d_update", [&](auto wtag) {
    constexpr int W = decltype(wtag)::value;
    conv_update_kernel<W><<<blocks_for(batch * dim, 256), 256, 0, as_stream(stream)>>>(
        dev(out), dev(conv_state), dev(x), dev(weight), dev(bias), silu, batch, dim, x_batch_stride);
  });
  check_launch("causal_conv1d_update");
}

#define S6_INSTANTIATE(T)                                                                                      \
  template void causal_conv1d_fwd<T>(T*, const T*, const T*, const T*, const T*, bool, const ConvDims&,        \
                                     void*);                                                                   \
  template void causal_conv1d_bwd<T>(T*, T*, T*, const T*, const T*, const T*, const T*, const T*, bool,       \
                                     const ConvDims&, void*);                                                  \
  template void causal_conv1d_update<T>(T*, T*, const T*, const T*, const T*, bool, int64_t, int64_t, int64_t, \
                                        int64_t, void*);
S6_INSTANTIATE(float)
S6_INSTANTIATE(BFloat16)
#undef S6_INSTANTIATE

}  // namespace s6::kernels::cuda
