// Host-side sampling into a float64/int64 buffer, then conversion to the requested dtype/device.
#include "core/random.h"

namespace s6 {

Tensor uniform(const Shape& shape, double low, double high, Philox& rng, DType dtype, Device device) {
  std::vector<double> v(static_cast<size_t>(shape_numel(shape)));
  for (double& x : v) x = low + (high - low) * rng.uniform();
  return Tensor::from_vector(v, shape).to(dtype).to(device);
}

Tensor normal(const Shape& shape, double mean, double stddev, Philox& rng, DType dtype, Device device) {
  std::vector<double> v(static_cast<size_t>(shape_numel(shape)));
  for (double& x : v) x = mean + stddev * rng.normal();
  return Tensor::from_vector(v, shape).to(dtype).to(device);
}

Tensor randint(const Shape& shape, int64_t low, int64_t high, Philox& rng, DType dtype, Device device) {
  S6_CHECK(high > low, "randint: empty range [{}, {})", low, high);
  std::vector<int64_t> v(static_cast<size_t>(shape_numel(shape)));
  for (int64_t& x : v) x = low + static_cast<int64_t>(rng.below(static_cast<uint64_t>(high - low)));
  return Tensor::from_vector(v, shape).to(dtype).to(device);
}

}  // namespace s6
