// CPU elementwise kernels (float32/float64). Softplus follows the reference: linear above 20.
#include "kernels/cpu/elementwise.h"

#include <cmath>
#include <vector>

namespace s6::kernels::cpu {

namespace {
template <typename T> inline T sigmoid(T x) { return T(1) / (T(1) + std::exp(-x)); }
}  // namespace

template <typename T> void unary_fwd(Unary op, T* out, const T* x, int64_t n) {
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    T v = x[i];
    switch (op) {
      case Unary::Exp: out[i] = std::exp(v); break;
      case Unary::NegExp: out[i] = -std::exp(v); break;
      case Unary::Silu: out[i] = v * sigmoid(v); break;
      case Unary::Softplus: out[i] = v <= T(20) ? std::log1p(std::exp(v)) : v; break;
    }
  }
}

template <typename T> void unary_bwd(Unary op, T* dx, const T* dout, const T* x, int64_t n) {
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    T v = x[i], g = dout[i];
    switch (op) {
      case Unary::Exp: dx[i] = g * std::exp(v); break;
      case Unary::NegExp: dx[i] = -g * std::exp(v); break;
      case Unary::Silu: {
        T s = sigmoid(v);
        dx[i] = g * s * (T(1) + v * (T(1) - s));
        break;
      }
      case Unary::Softplus: dx[i] = v <= T(20) ? g * sigmoid(v) : g; break;
    }
  }
}

template <typename T> void binary_fwd(Binary op, T* out, const T* a, const T* b, int64_t n) {
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    switch (op) {
      case Binary::Add: out[i] = a[i] + b[i]; break;
      case Binary::Sub: out[i] = a[i] - b[i]; break;
      case Binary::Mul: out[i] = a[i] * b[i]; break;
    }
  }
}

template <typename T> void scale(T* out, const T* x, T factor, int64_t n) {
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] * factor;
}

template <typename T>
void sum_to(T* out, const int64_t* out_shape, const T* x, const int64_t* in_shape, int64_t rank) {
  int64_t out_n = 1, in_n = 1;
  for (int64_t d = 0; d < rank; ++d) {
    out_n *= out_shape[d];
    in_n *= in_shape[d];
  }
  for (int64_t i = 0; i < out_n; ++i) out[i] = T(0);
  std::vector<int64_t> out_strides(static_cast<size_t>(rank));
  int64_t acc = 1;
  for (int64_t d = rank - 1; d >= 0; --d) {
    out_strides[d] = out_shape[d] == 1 ? 0 : acc;
    acc *= out_shape[d];
  }
  for (int64_t i = 0; i < in_n; ++i) {
    int64_t rem = i, o = 0;
    for (int64_t d = rank - 1; d >= 0; --d) {
      o += (rem % in_shape[d]) * out_strides[d];
      rem /= in_shape[d];
    }
    out[o] += x[i];
  }
}

#define S6_INSTANTIATE(T)                                               \
  template void unary_fwd<T>(Unary, T*, const T*, int64_t);             \
  template void unary_bwd<T>(Unary, T*, const T*, const T*, int64_t);   \
  template void binary_fwd<T>(Binary, T*, const T*, const T*, int64_t); \
  template void scale<T>(T*, const T*, T, int64_t);                     \
  template void sum_to<T>(T*, const int64_t*, const T*, const int64_t*, int64_t);
S6_INSTANTIATE(float)
S6_INSTANTIATE(double)
#undef S6_INSTANTIATE

}  // namespace s6::kernels::cpu
