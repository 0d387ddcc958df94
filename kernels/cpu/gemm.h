// Row-major matrix products on the CPU through the system BLAS (float32 and float64).
#pragma once
#include <cstdint>

namespace s6::kernels::cpu {

// C (m x n) = alpha * op(A) op(B) + beta * C, all row-major and contiguous;
// op(A) is m x k (A^T stored k x m when trans_a), op(B) is k x n (B^T stored n x k when trans_b).
template <typename T> void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha,
                                const T* A, const T* B, T beta, T* C);

}  // namespace s6::kernels::cpu
