// CPU reference depthwise causal conv1d (+ optional SiLU) forward and backward, channel-last.
#include "kernels/cpu/causal_conv1d.h"

#include <cmath>
#include <vector>

namespace s6::kernels::cpu {

namespace {

// One (batch, channel) row: strided view of x plus the width-1 inputs that precede t=0.
template <typename T> struct Row {
  const T* x;      // &x[b, 0, d]
  const T* state;  // &initial_state[b, d, 0] or null
  int64_t stride;  // dim
  int64_t width;

  // Input at time s (s may be negative, down to -(width-1)).
  T at(int64_t s) const {
    if (s >= 0) return x[s * stride];
    if (!state) return T(0);
    return state[s + (width - 1)];
  }
};

template <typename T>
Row<T> make_row(const T* x, const T* initial_state, int64_t b, int64_t d, const ConvDims& dm) {
  const int64_t w1 = dm.width - 1;
  return Row<T>{x + b * dm.length * dm.dim + d, initial_state ? initial_state + (b * dm.dim + d) * w1 : nullptr,
                dm.dim, dm.width};
}

// Shared by forward and backward so the recomputed pre-activation is bit-identical.
template <typename T> T pre_act(const Row<T>& row, const T* wd, T bias, int64_t t) {
  T acc = bias;
  const int64_t base = t - (row.width - 1);
  for (int64_t w = 0; w < row.width; ++w) acc += wd[w] * row.at(base + w);
  return acc;
}

template <typename T> T sigmoid(T v) { return T(1) / (T(1) + std::exp(-v)); }

}  // namespace

template <typename T> void causal_conv1d_fwd(T* out, const T* x, const T* weight, const T* bias,
                                             const T* initial_state, bool silu, const ConvDims& dims) {
  const int64_t B = dims.batch, L = dims.length, D = dims.dim, W = dims.width;
  // No reduction across (b, d), so both can be split freely.
#pragma omp parallel for collapse(2) schedule(static) if (B * L * D * W > 32768)
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t d = 0; d < D; ++d) {
      const Row<T> row = make_row(x, initial_state, b, d, dims);
      const T* wd = weight + d * W;
      const T bd = bias ? bias[d] : T(0);
      T* o = out + b * L * D + d;
      for (int64_t t = 0; t < L; ++t) {
        const T p = pre_act(row, wd, bd, t);
        o[t * D] = silu ? p * sigmoid(p) : p;
      }
    }
  }
}

template <typename T> void causal_conv1d_bwd(T* dx, T* dweight, T* dbias, const T* dout, const T* x,
                                             const T* weight, const T* bias, const T* initial_state, bool silu,
                                             const ConvDims& dims) {
  const int64_t B = dims.batch, L = dims.length, D = dims.dim, W = dims.width;
  if (!dx && !dweight && !dbias) return;
    // Parallel over channels only: each channel's dweight/dbias is summed by one thread over b then
    // t in fixed order, so results do not depend on the thread count.
#pragma omp parallel if (B * L * D * W > 32768)
  {
    // dpre for one (b, d) row, padded with W-1 trailing zeros so dx needs no bounds checks.
    std::vector<T> dpre(static_cast<size_t>(L + W - 1), T(0));
#pragma omp for schedule(static)
    for (int64_t d = 0; d < D; ++d) {
      const T* wd = weight + d * W;
      const T bd = bias ? bias[d] : T(0);
      T db = T(0);
      if (dweight) {
        for (int64_t w = 0; w < W; ++w) dweight[d * W + w] = T(0);
      }
      for (int64_t b = 0; b < B; ++b) {
        const Row<T> row = make_row(x, initial_state, b, d, dims);
        const T* go = dout + b * L * D + d;
        for (int64_t t = 0; t < L; ++t) {
          const T g = go[t * D];
          if (silu) {
            const T p = pre_act(row, wd, bd, t);
            const T s = sigmoid(p);
            dpre[t] = g * s * (T(1) + p * (T(1) - s));
          } else {
            dpre[t] = g;
          }
        }
        if (dx) {
          // x[t] feeds outputs t..t+W-1 through taps W-1..0.
          T* gx = dx + b * L * D + d;
          for (int64_t t = 0; t < L; ++t) {
            T acc = T(0);
            for (int64_t w = 0; w < W; ++w) acc += wd[w] * dpre[t + (W - 1) - w];
            gx[t * D] = acc;
          }
        }
        if (dweight) {
          for (int64_t w = 0; w < W; ++w) {
            T acc = T(0);
            for (int64_t t = 0; t < L; ++t) acc += row.at(t - (W - 1) + w) * dpre[t];
            dweight[d * W + w] += acc;
          }
        }
        if (dbias) {
          for (int64_t t = 0; t < L; ++t) db += dpre[t];
        }
      }
      if (dbias) dbias[d] = db;
    }
  }
}

template void causal_conv1d_fwd<float>(float*, const float*, const float*, const float*, const float*, bool,
                                       const ConvDims&);
template void causal_conv1d_fwd<double>(double*, const double*, const double*, const double*, const double*,
                                        bool, const ConvDims&);
template void causal_conv1d_bwd<float>(float*, float*, float*, const float*, const float*, const float*,
                                       const float*, const float*, bool, const ConvDims&);
template void causal_conv1d_bwd<double>(double*, double*, double*, const double*, const double*, const double*,
                                        const double*, const double*, bool, const ConvDims&);

}  // namespace s6::kernels::cpu
