// Validation of MambaConfig and the reference's parameter names and shapes.
#include "layers/mamba_config.h"

#include <fmt/format.h>

#include "core/error.h"

namespace s6 {

void MambaConfig::validate() const {
  S6_CHECK(d_model > 0, "model.d_model must be positive, got {}", d_model);
  S6_CHECK(n_layer > 0, "model.n_layer must be positive, got {}", n_layer);
  S6_CHECK(vocab_size > 0, "model.vocab_size must be positive, got {}", vocab_size);
  S6_CHECK(d_state >= 1 && d_state <= 256, "model.d_state must be in [1, 256], got {}", d_state);
  S6_CHECK(d_conv >= 1 && d_conv <= 4, "model.d_conv must be in [1, 4], got {}", d_conv);
  S6_CHECK(expand >= 1, "model.expand must be >= 1, got {}", expand);
  S6_CHECK(dt_rank >= 0, "model.dt_rank must be >= 1 or 0 for auto, got {}", dt_rank);
  S6_CHECK(dt_min > 0 && dt_max >= dt_min,
           "model.dt_min/dt_max must satisfy 0 < dt_min <= dt_max, got {} and {}", dt_min, dt_max);
  S6_CHECK(norm_eps > 0, "model.norm_eps must be positive, got {}", norm_eps);
}

std::vector<ParamSpec> parameter_specs(const MambaConfig& c) {
  c.validate();
  const int64_t dm = c.d_model, din = c.d_inner(), n = c.d_state, r = c.resolved_dt_rank();
  const bool gate = c.block == BlockKind::Mamba, selective = c.layer == LayerKind::S6;
  std::vector<ParamSpec> specs;
  specs.push_back({"backbone.embedding.weight", {c.padded_vocab(), dm}, false});
  for (int64_t i = 0; i < c.n_layer; ++i) {
    const std::string p = fmt::format("backbone.layers.{}.", i);
    specs.push_back({p + "norm.weight", {dm}, false});
    specs.push_back({p + "mixer.in_proj.weight", {gate ? 2 * din : din, dm}, true});
    if (c.bias) specs.push_back({p + "mixer.in_proj.bias", {gate ? 2 * din : din}, false});
    specs.push_back({p + "mixer.conv1d.weight", {din, 1, c.d_conv}, true});
    if (c.conv_bias) specs.push_back({p + "mixer.conv1d.bias", {din}, false});
    if (selective) {
      specs.push_back({p + "mixer.x_proj.weight", {r + 2 * n, din}, true});
      specs.push_back({p + "mixer.dt_proj.weight", {din, r}, true});
    } else {
      specs.push_back({p + "mixer.B", {n}, false});
      specs.push_back({p + "mixer.C", {n}, false});
    }
    specs.push_back({p + "mixer.dt_proj.bias", {din}, false});
    specs.push_back({p + "mixer.A_log", {din, n}, false});
    specs.push_back({p + "mixer.D", {din}, false});
    specs.push_back({p + "mixer.out_proj.weight", {dm, din}, true});
    if (c.bias) specs.push_back({p + "mixer.out_proj.bias", {dm}, false});
  }
  specs.push_back({"backbone.norm_f.weight", {dm}, false});
  if (!c.tie_embeddings) specs.push_back({"lm_head.weight", {c.padded_vocab(), dm}, true});
  return specs;
}

int64_t count_parameters(const MambaConfig& config) {
  int64_t total = 0;
  for (const ParamSpec& s : parameter_specs(config)) total += shape_numel(s.shape);
  return total;
}

}  // namespace s6
