// CUDA linear layer products through cuBLASLt (cuBLAS as a fallback): fp32, or bf16 operands with
// fp32 accumulation. TF32 is never used. Row-major; T is float or s6::BFloat16. Every matrix is
// contiguous except x, whose rows may be ldx >= in elements apart (0: in), e.g. a column block of
// a wider matrix.
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace s6::kernels::cuda {

// y (rows, out) = x (rows, in) w^T + bias; w is (out, in); bias (out) may be null (fused as a
// cuBLASLt epilogue).
template <typename T> void linear_fwd(T* y, const T* x, const T* w, const T* bias, int64_t rows, int64_t in,
                                      int64_t out, void* stream, int64_t ldx = 0);

// dx (rows, in) = dy (rows, out) w, or dx += dy w when accumulate.
template <typename T> void linear_bwd_input(T* dx, const T* dy, const T* w, int64_t rows, int64_t in,
                                            int64_t out, void* stream, bool accumulate = false);

// dw (out, in) = dy^T x. (The bias gradient is sum_rows(dy) from kernels/cuda/elementwise.h.)
template <typename T> void linear_bwd_weight(T* dw, const T* dy, const T* x, int64_t rows, int64_t in,
                                             int64_t out, void* stream, int64_t ldx = 0);

}  // namespace s6::kernels::cuda
