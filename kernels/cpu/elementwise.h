// CPU elementwise kernels over contiguous buffers of n elements: unary maps with their
// derivatives, and binary maps over operands already broadcast to one shape.
#pragma once
#include <cstdint>

namespace s6::kernels::cpu {

enum class Unary { Exp, NegExp, Silu, Softplus };
enum class Binary { Add, Sub, Mul };

template <typename T> void unary_fwd(Unary op, T* out, const T* x, int64_t n);
// dx = dout * f'(x)
template <typename T> void unary_bwd(Unary op, T* dx, const T* dout, const T* x, int64_t n);
template <typename T> void binary_fwd(Binary op, T* out, const T* a, const T* b, int64_t n);
template <typename T> void scale(T* out, const T* x, T factor, int64_t n);

// Sums x (contiguous, shape `in`) into out (shape `out`, same rank, each dim equal or 1),
// visiting x in order (deterministic).
template <typename T>
void sum_to(T* out, const int64_t* out_shape, const T* x, const int64_t* in_shape, int64_t rank);

}  // namespace s6::kernels::cpu
