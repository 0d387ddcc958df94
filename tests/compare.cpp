// Implementation of the shared error measures (tests/compare.h).
#include "tests/compare.h"

#include <cmath>
#include <limits>

namespace s6::testing {

std::vector<double> host_values(const Tensor& t) {
  return t.detach().contiguous().to(Device::CPU).to(DType::Float64).contiguous().to_vector<double>();
}

double rel_err(const Tensor& out, const Tensor& ref) {
  std::vector<double> a = host_values(out), b = host_values(ref);
  if (a.size() != b.size()) return std::numeric_limits<double>::infinity();
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return std::numeric_limits<double>::infinity();
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

}  // namespace s6::testing
