// Random tensors drawn from a Philox stream (generated on the host, then moved to the device).
#pragma once
#include "core/philox.h"
#include "core/tensor.h"

namespace s6 {

Tensor uniform(const Shape& shape, double low, double high, Philox& rng, DType dtype = DType::Float32,
               Device device = Device::CPU);
Tensor normal(const Shape& shape, double mean, double stddev, Philox& rng, DType dtype = DType::Float32,
              Device device = Device::CPU);
// Integers uniform in [low, high).
Tensor randint(const Shape& shape, int64_t low, int64_t high, Philox& rng, DType dtype = DType::Int64,
               Device device = Device::CPU);

}  // namespace s6
