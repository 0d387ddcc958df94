// CUDA elementwise kernels and small reductions used by layers/elementwise_ops.cpp and the
// linear bias gradient. Contiguous buffers; T is float, double or s6::BFloat16 (math in fp32
// for bf16). Every reduction is two-pass with fixed grids (deterministic, no float atomics).
#pragma once
#include <cstdint>

#include "core/dtype.h"
#include "kernels/cpu/elementwise.h"

namespace s6::kernels::cuda {

using cpu::Binary;
using cpu::Unary;

template <typename T> void unary_fwd(Unary op, T* out, const T* x, int64_t n, void* stream);
// dx = dout * f'(x)
template <typename T> void unary_bwd(Unary op, T* dx, const T* dout, const T* x, int64_t n, void* stream);
// a and b already broadcast to n elements.
template <typename T> void binary_fwd(Binary op, T* out, const T* a, const T* b, int64_t n, void* stream);
template <typename T> void scale(T* out, const T* x, double factor, int64_t n, void* stream);

// out[0] (device) = sum of the n elements of x.
template <typename T> void sum_all(T* out, const T* x, int64_t n, void* stream);

// out[c] = sum_r x[r, c] for a row-major (rows, cols) matrix.
template <typename T> void sum_rows(T* out, const T* x, int64_t rows, int64_t cols, void* stream);

// Sums x (contiguous, shape in_shape) into out (shape out_shape, same rank, each dim equal or 1).
template <typename T>
void sum_to(T* out, const int64_t* out_shape, const T* x, const int64_t* in_shape, int64_t rank, void* stream);

}  // namespace s6::kernels::cuda
