// CPU embedding: gather rows; backward scatters in index order, parallel over columns only.
#include "kernels/cpu/embedding.h"

#include <algorithm>
#include <cstring>

namespace s6::kernels::cpu {

template <typename T, typename I>
void embedding_fwd(T* out, const I* ids, const T* weight, int64_t count, int64_t width) {
#pragma omp parallel for if (count * width > 65536)
  for (int64_t i = 0; i < count; ++i)
    std::memcpy(out + i * width, weight + static_cast<int64_t>(ids[i]) * width, width * sizeof(T));
}

template <typename T, typename I>
void embedding_bwd(T* dweight, const T* dout, const I* ids, int64_t count, int64_t vocab, int64_t width) {
  std::memset(dweight, 0, static_cast<size_t>(vocab * width) * sizeof(T));
  constexpr int64_t kCols = 64;
#pragma omp parallel for if (count * width > 65536)
  for (int64_t c0 = 0; c0 < width; c0 += kCols) {
    int64_t c1 = std::min(width, c0 + kCols);
    for (int64_t i = 0; i < count; ++i) {
      T* row = dweight + static_cast<int64_t>(ids[i]) * width;
      const T* g = dout + i * width;
      for (int64_t c = c0; c < c1; ++c) row[c] += g[c];
    }
  }
}

#define S6_INSTANTIATE(T, I)                                                   \
  template void embedding_fwd<T, I>(T*, const I*, const T*, int64_t, int64_t); \
  template void embedding_bwd<T, I>(T*, const T*, const I*, int64_t, int64_t, int64_t);
S6_INSTANTIATE(float, int32_t)
S6_INSTANTIATE(float, int64_t)
S6_INSTANTIATE(double, int32_t)
S6_INSTANTIATE(double, int64_t)
#undef S6_INSTANTIATE

}  // namespace s6::kernels::cpu
