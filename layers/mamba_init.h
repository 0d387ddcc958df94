// Reference initialization of one parameter (docs/model.md 1.4), by name, from a Philox stream.
#pragma once
#include "core/philox.h"
#include "core/tensor.h"
#include "layers/mamba_config.h"

namespace s6 {

// Returns a float64 CPU tensor of spec.shape holding the parameter's initial value.
Tensor initial_value(const ParamSpec& spec, const MambaConfig& config, Philox& rng);

// softplus^-1(dt) = dt + log(1 - exp(-dt)), the dt_proj.bias value for a target step dt.
double inverse_softplus(double dt);

}  // namespace s6
