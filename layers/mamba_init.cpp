// Initialization as the reference does it: PyTorch-default uniform for Linear/Conv1d, log-uniform
// dt through an inverse softplus, S4D-real A, unit D, N(0, 0.02) embedding, out_proj / sqrt(n_layer).
#include "layers/mamba_init.h"

#include <cmath>
#include <string>

#include "core/random.h"

namespace s6 {

namespace {
bool ends_with(const std::string& s, const char* suffix) {
  std::string x(suffix);
  return s.size() >= x.size() && s.compare(s.size() - x.size(), x.size(), x) == 0;
}
}  // namespace

double inverse_softplus(double dt) { return dt + std::log(-std::expm1(-dt)); }

Tensor initial_value(const ParamSpec& spec, const MambaConfig& c, Philox& rng) {
  const std::string& n = spec.name;
  const Shape& shape = spec.shape;
  auto fan_in_uniform = [&](double fan_in) {
    double bound = 1.0 / std::sqrt(fan_in);
    return uniform(shape, -bound, bound, rng, DType::Float64);
  };
  if (ends_with(n, "embedding.weight")) return normal(shape, 0.0, 0.02, rng, DType::Float64);
  if (ends_with(n, "norm.weight") || ends_with(n, "norm_f.weight") || ends_with(n, "mixer.D"))
    return Tensor::full(shape, 1.0, DType::Float64);
  if (ends_with(n, "in_proj.weight")) return fan_in_uniform(static_cast<double>(c.d_model));
  if (ends_with(n, "x_proj.weight")) return fan_in_uniform(static_cast<double>(c.d_inner()));
  if (ends_with(n, "out_proj.weight")) {
    Tensor w = fan_in_uniform(static_cast<double>(c.d_inner()));
    double s = 1.0 / std::sqrt(static_cast<double>(c.n_layer));
    for (int64_t i = 0; i < w.numel(); ++i) w.data<double>()[i] *= s;
    return w;
  }
  if (ends_with(n, "conv1d.weight") || ends_with(n, "conv1d.bias"))
    return fan_in_uniform(static_cast<double>(c.d_conv));  // fan_in = in_channels/groups * width
  if (ends_with(n, "dt_proj.weight")) {
    double s = std::pow(static_cast<double>(c.resolved_dt_rank()), -0.5) * c.dt_scale;
    return c.dt_init_random ? uniform(shape, -s, s, rng, DType::Float64)
                            : Tensor::full(shape, s, DType::Float64);
  }
  if (ends_with(n, "dt_proj.bias")) {
    Tensor b = Tensor::empty(shape, DType::Float64);
    double lo = std::log(c.dt_min), hi = std::log(c.dt_max);
    for (int64_t i = 0; i < b.numel(); ++i) {
      double dt = std::max(std::exp(rng.uniform() * (hi - lo) + lo), c.dt_init_floor);
      b.data<double>()[i] = inverse_softplus(dt);
    }
    return b;
  }
  if (ends_with(n, "A_log")) {
    Tensor a = Tensor::empty(shape, DType::Float64);
    for (int64_t d = 0; d < shape[0]; ++d)
      for (int64_t k = 0; k < shape[1]; ++k) a.data<double>()[d * shape[1] + k] = std::log(k + 1.0);
    return a;
  }
  if (ends_with(n, "mixer.B")) return Tensor::full(shape, 1.0, DType::Float64);  // LTI ablation
  if (ends_with(n, "mixer.C")) return normal(shape, 0.0, 1.0, rng, DType::Float64);
  if (ends_with(n, "lm_head.weight")) return fan_in_uniform(static_cast<double>(c.d_model));
  if (ends_with(n, ".bias")) return Tensor::zeros(shape, DType::Float64);  // Linear biases: zeroed
  S6_FAIL("init: no rule for parameter {}", n);
}

}  // namespace s6
