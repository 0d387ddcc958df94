// Error measures shared by the tests that compare one computation of a tensor with another.
#pragma once
#include <vector>

#include "core/tensor.h"

namespace s6::testing {

// The elements as float64 on the host (any dtype, device or strides).
std::vector<double> host_values(const Tensor& t);

// ||out - ref|| / ||ref|| (absolute when ref is zero); NaN anywhere in out, or a size mismatch,
// gives infinity.
double rel_err(const Tensor& out, const Tensor& ref);

}  // namespace s6::testing
