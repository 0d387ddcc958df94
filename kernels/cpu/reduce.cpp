// Deterministic CPU reductions: parallel over columns or fixed blocks, never over thread count.
#include "kernels/cpu/reduce.h"

#include <cstddef>
#include <vector>

namespace s6::kernels::cpu {

template <typename T> void sum_rows(T* out, const T* x, int64_t rows, int64_t cols) {
#pragma omp parallel for if (rows * cols > 65536)
  for (int64_t j = 0; j < cols; ++j) {
    T acc = 0;
    for (int64_t i = 0; i < rows; ++i) acc += x[i * cols + j];
    out[j] = acc;
  }
}

template <typename T> T sum_all(const T* x, int64_t n) {
  constexpr int64_t kBlock = 4096;
  int64_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<T> partial(static_cast<size_t>(blocks), T(0));
#pragma omp parallel for if (n > 65536)
  for (int64_t b = 0; b < blocks; ++b) {
    T acc = 0;
    int64_t end = (b + 1) * kBlock < n ? (b + 1) * kBlock : n;
    for (int64_t i = b * kBlock; i < end; ++i) acc += x[i];
    partial[b] = acc;
  }
  T total = 0;
  for (T p : partial) total += p;
  return total;
}

template void sum_rows<float>(float*, const float*, int64_t, int64_t);
template void sum_rows<double>(double*, const double*, int64_t, int64_t);
template float sum_all<float>(const float*, int64_t);
template double sum_all<double>(const double*, int64_t);

}  // namespace s6::kernels::cpu
