// Out-of-line parts of the Philox generator that need <cmath> or loops.
#include "core/philox.h"

#include <cmath>

namespace s6 {

uint64_t Philox::below(uint64_t n) {
  if (n <= 1) return 0;
  uint64_t limit = UINT64_MAX - UINT64_MAX % n;
  for (;;) {
    uint64_t x = (static_cast<uint64_t>(next_u32()) << 32) | next_u32();
    if (x < limit) return x % n;
  }
}

double Philox::normal() {
  double u1 = uniform(), u2 = uniform();
  if (u1 < 1e-300) u1 = 1e-300;
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
}

}  // namespace s6
