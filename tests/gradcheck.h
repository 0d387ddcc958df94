// Float64 central-difference gradient checks shared by the op and model tests.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace s6::testing {

struct GradcheckOptions {
  double eps = 1e-6;
  double atol = 1e-5;
  double rtol = 1e-3;
  uint64_t seed = 1234;
};

using OpFn = std::function<std::vector<Tensor>(const std::vector<Tensor>&)>;

// Checks d<R, f(inputs)>/d input against finite differences for every input that requires grad
// (R: fixed random cotangents, one per output). Returns "" when all agree, else a report naming
// the input, element, analytic and numeric values.
std::string gradcheck(const OpFn& f, std::vector<Tensor> inputs, const GradcheckOptions& opt = {});

}  // namespace s6::testing
