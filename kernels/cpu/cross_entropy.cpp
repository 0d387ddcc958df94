// CPU cross-entropy: stable log-sum-exp per row; row losses summed in fixed blocks (deterministic).
#include "kernels/cpu/cross_entropy.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace s6::kernels::cpu {

namespace {
template <typename T> double log_sum_exp(const T* row, int64_t vocab) {
  double mx = row[0];
  for (int64_t v = 1; v < vocab; ++v) mx = std::max(mx, static_cast<double>(row[v]));
  double acc = 0;
  for (int64_t v = 0; v < vocab; ++v) acc += std::exp(static_cast<double>(row[v]) - mx);
  return mx + std::log(acc);
}
}  // namespace

template <typename T, typename I> double cross_entropy_fwd(const T* logits, const I* targets, int64_t rows,
                                                           int64_t vocab, int64_t ignore_index,
                                                           int64_t* counted) {
  std::vector<double> row_loss(static_cast<size_t>(rows), 0.0);
#pragma omp parallel for if (rows * vocab > 65536)
  for (int64_t r = 0; r < rows; ++r) {
    int64_t t = static_cast<int64_t>(targets[r]);
    if (t == ignore_index) continue;
    const T* row = logits + r * vocab;
    row_loss[r] = log_sum_exp(row, vocab) - static_cast<double>(row[t]);
  }
  double total = 0;
  int64_t n = 0;
  for (int64_t r = 0; r < rows; ++r) {
    if (static_cast<int64_t>(targets[r]) == ignore_index) continue;
    total += row_loss[r];
    ++n;
  }
  *counted = n;
  return total;
}

template <typename T, typename I> void cross_entropy_bwd(T* dlogits, const T* logits, const I* targets,
                                                         int64_t rows, int64_t vocab, int64_t ignore_index,
                                                         double scale) {
#pragma omp parallel for if (rows * vocab > 65536)
  for (int64_t r = 0; r < rows; ++r) {
    T* d = dlogits + r * vocab;
    int64_t t = static_cast<int64_t>(targets[r]);
    if (t == ignore_index) {
      for (int64_t v = 0; v < vocab; ++v) d[v] = T(0);
      continue;
    }
    const T* row = logits + r * vocab;
    double lse = log_sum_exp(row, vocab);
    for (int64_t v = 0; v < vocab; ++v)
      d[v] = static_cast<T>((std::exp(static_cast<double>(row[v]) - lse) - (v == t ? 1.0 : 0.0)) * scale);
  }
}

#define S6_INSTANTIATE(T, I)                                                                        \
  template double cross_entropy_fwd<T, I>(const T*, const I*, int64_t, int64_t, int64_t, int64_t*); \
  template void cross_entropy_bwd<T, I>(T*, const T*, const I*, int64_t, int64_t, int64_t, double);
S6_INSTANTIATE(float, int32_t)
S6_INSTANTIATE(float, int64_t)
S6_INSTANTIATE(double, int32_t)
S6_INSTANTIATE(double, int64_t)
#undef S6_INSTANTIATE

}  // namespace s6::kernels::cpu
