// Small CPU reductions shared by the ops: column sums and deterministic sum-to-shape.
#pragma once
#include <cstdint>

namespace s6::kernels::cpu {

// out[j] = sum_i x[i, j] for a row-major (rows, cols) matrix; rows reduced in order.
template <typename T> void sum_rows(T* out, const T* x, int64_t rows, int64_t cols);

// Sum of all n elements, pairwise over fixed blocks (deterministic).
template <typename T> T sum_all(const T* x, int64_t n);

}  // namespace s6::kernels::cpu
