// Mamba mixer, block and language model built from the fused ops in layers/ops.h.
#include "layers/mamba.h"

#include <fmt/format.h>

#include <algorithm>

#include "core/philox.h"
#include "layers/mamba_init.h"
#include "layers/ops.h"

namespace s6 {

// ---- MambaMixer ---------------------------------------------------------------------------------

MambaMixer::MambaMixer(const MambaConfig& config, std::map<std::string, Tensor> params, DType compute)
    : config_(config), params_(std::move(params)), compute_(compute) {}

Tensor MambaMixer::param(const char* name) const {
  auto it = params_.find(name);
  if (it == params_.end()) {
    std::string known;
    for (const auto& [key, value] : params_) known += (known.empty() ? "" : ", ") + key;
    S6_FAIL("MambaMixer: no parameter mixer.{} (this mixer has {})", name, known);
  }
  return it->second;
}

Tensor MambaMixer::compute_param(const char* name, bool present) const {
  return present ? to_dtype(param(name), compute_) : Tensor();
}

namespace {
// The new conv_state: the last d_conv raw inputs of (previous state ++ this sequence's x). Only
// x's last d_conv steps can reach it, so a long prefill joins no more than those.
Tensor advance_conv_state(const Tensor& previous, const Tensor& x) {
  const int64_t batch = x.size(0), din = x.size(2), width = previous.size(2);
  const int64_t keep = std::min(x.size(1), width);
  Tensor joined = Tensor::empty({batch, din, width + keep}, x.dtype(), x.device());
  joined.narrow(2, 0, width).copy_(previous);
  joined.narrow(2, width, keep).copy_(x.detach().narrow(1, x.size(1) - keep, keep).transpose(1, 2));
  return joined.narrow(2, keep, width).contiguous();
}
}  // namespace

Tensor MambaMixer::forward(const Tensor& hidden, LayerState* state) const {
  const MambaConfig& c = config_;
  const int64_t batch = hidden.size(0), length = hidden.size(1);
  const int64_t din = c.d_inner(), n = c.d_state, r = c.resolved_dt_rank();
  S6_CHECK(hidden.dim() == 3 && hidden.size(2) == c.d_model,
           "MambaMixer: hidden should be (batch, length, {}) but is {}", c.d_model, hidden.describe());

  Tensor h = to_dtype(hidden, compute_), x, z;
  if (c.block == BlockKind::Mamba) {  // x and z come out contiguous: the conv and scan copy nothing
    std::vector<Tensor> xz = linear_split(h, compute_param("in_proj.weight"),
                                          compute_param("in_proj.bias", c.bias), {din, din});
    x = xz[0];
    z = xz[1];
  } else {
    x = linear(h, compute_param("in_proj.weight"), compute_param("in_proj.bias", c.bias));
  }
  Tensor conv_init;
  if (state && c.d_conv > 1) conv_init = state->conv_state.narrow(2, 1, c.d_conv - 1).contiguous();
  Tensor xc = causal_conv1d(x, compute_param("conv1d.weight"), compute_param("conv1d.bias", c.conv_bias),
                            /*silu=*/true, conv_init);

  Tensor delta, B, C;
  if (c.layer == LayerKind::S6) {
    std::vector<Tensor> parts = split(linear(xc, compute_param("x_proj.weight")), {r, n, n}, -1);
    delta = linear(parts[0], compute_param("dt_proj.weight"));  // dt bias is added inside the scan
    B = parts[1];
    C = parts[2];
  } else {  // LTI: dt = softplus(dt bias) per channel, B and C shared learned vectors
    delta = Tensor::zeros({batch, length, din}, xc.dtype(), xc.device());
    B = to_dtype(expand(param("B"), {batch, length, n}), compute_);
    C = to_dtype(expand(param("C"), {batch, length, n}), compute_);
  }
  Tensor A = neg_exp(param("A_log"));

  ScanOptions options;
  if (state) {
    options.initial_state = state->ssm_state;
    options.return_final_state = true;
  }
  ScanResult scan = selective_scan_ex(xc, delta, A, B, C, param("D"), z, param("dt_proj.bias"), options);
  if (state) {  // in place: the state's buffers stay put, so a captured decode step can replay
    state->ssm_state.copy_(scan.final_state);
    state->conv_state.copy_(advance_conv_state(state->conv_state, x));
  }
  return linear(scan.out, compute_param("out_proj.weight"), compute_param("out_proj.bias", c.bias));
}

// ---- MambaBlock ---------------------------------------------------------------------------------

MambaBlock::MambaBlock(const MambaConfig& config, Tensor norm_weight, MambaMixer mixer)
    : config_(config), norm_weight_(std::move(norm_weight)), mixer_(std::move(mixer)) {}

std::pair<Tensor, Tensor> MambaBlock::forward(const Tensor& hidden, const Tensor& residual,
                                              LayerState* state) const {
  // The residual stream and the norm stay in the parameters' dtype (the reference's residual_in_fp32);
  // a bf16 mixer output goes in as it is and the normed activations come out bf16 (mixed precision).
  auto [normed, new_residual] = rmsnorm_add(hidden, residual, norm_weight_, config_.norm_eps);
  return {mixer_.forward(normed, state), new_residual};
}

// ---- MambaLM ------------------------------------------------------------------------------------

MambaLM::MambaLM(const MambaConfig& config, uint64_t seed, DType dtype, Device device,
                 std::optional<DType> compute_dtype)
    : config_(config), dtype_(dtype), compute_(compute_dtype.value_or(dtype)), device_(device) {
  S6_CHECK(dtype == DType::Float32 || dtype == DType::Float64,
           "MambaLM: parameters are float32 (or float64 for gradient checks), not {}", dtype_name(dtype));
  S6_CHECK(compute_ == dtype || (dtype == DType::Float32 && compute_ == DType::BFloat16),
           "MambaLM: compute dtype {} over {} parameters; mixed precision is bfloat16 over float32",
           dtype_name(compute_), dtype_name(dtype));
  Philox rng(seed, /*stream=*/0x1417);
  for (const ParamSpec& spec : parameter_specs(config_)) {
    Tensor value = initial_value(spec, config_, rng).to(dtype).to(device);
    value.requires_grad_();
    params_.push_back({spec.name, value, spec.weight_decay});
  }
  build_modules();
}

void MambaLM::build_modules() {
  blocks_.clear();
  for (int64_t i = 0; i < config_.n_layer; ++i) {
    const std::string prefix = fmt::format("backbone.layers.{}.", i);
    const std::string mixer_prefix = prefix + "mixer.";
    std::map<std::string, Tensor> mixer_params;
    for (const NamedParameter& p : params_)
      if (p.name.rfind(mixer_prefix, 0) == 0) mixer_params[p.name.substr(mixer_prefix.size())] = p.tensor;
    blocks_.emplace_back(config_, parameter(prefix + "norm.weight"),
                         MambaMixer(config_, mixer_params, compute_));
  }
}

Tensor MambaLM::parameter(const std::string& name) const {
  for (const NamedParameter& p : params_)
    if (p.name == name) return p.tensor;
  S6_FAIL("MambaLM has no parameter named '{}'", name);
}

int64_t MambaLM::num_parameters() const {
  int64_t total = 0;
  for (const NamedParameter& p : params_) total += p.tensor.numel();
  return total;
}

std::pair<Tensor, Tensor> MambaLM::run_blocks(const Tensor& embeddings, InferenceState* state) const {
  S6_CHECK(!state || static_cast<int64_t>(state->layers.size()) == config_.n_layer,
           "MambaLM: the inference state has {} layers but the model has {}", state ? state->layers.size() : 0,
           config_.n_layer);
  Tensor hidden = embeddings, residual;
  for (int64_t i = 0; i < config_.n_layer; ++i) {
    auto [h, r] = blocks_[i].forward(hidden, residual, state ? &state->layers[i] : nullptr);
    hidden = h;
    residual = r;
  }
  return {hidden, residual};
}

Tensor MambaLM::head(const Tensor& hidden, const Tensor& residual) const {
  Tensor normed = rmsnorm_add(hidden, residual, parameter("backbone.norm_f.weight"), config_.norm_eps).first;
  Tensor head = config_.tie_embeddings ? parameter("backbone.embedding.weight") : parameter("lm_head.weight");
  return linear(to_dtype(normed, compute_), to_dtype(head, compute_));
}

Tensor MambaLM::forward_embeddings(const Tensor& embeddings, InferenceState* state) const {
  auto [hidden, residual] = run_blocks(embeddings, state);
  return head(hidden, residual);
}

Tensor MambaLM::prefill(const Tensor& ids, InferenceState& state) const {
  S6_CHECK(ids.dim() == 2 && ids.size(1) >= 1,
           "MambaLM::prefill: ids should be (batch, length >= 1) but are {}", ids.describe());
  auto [hidden, residual] = run_blocks(embedding(ids, parameter("backbone.embedding.weight")), &state);
  const int64_t batch = ids.size(0), last = ids.size(1) - 1;
  // Only the last position's logits are needed: no (batch, length, vocab) tensor.
  auto at_last = [&](const Tensor& t) { return t.detach().narrow(1, last, 1).contiguous(); };
  Tensor logits = head(at_last(hidden), at_last(residual));
  return logits.view({batch, logits.size(2)});
}

Tensor MambaLM::forward(const Tensor& ids, InferenceState* state) const {
  S6_CHECK(ids.dim() == 2, "MambaLM: ids should be (batch, length) but are {}", ids.describe());
  return forward_embeddings(embedding(ids, parameter("backbone.embedding.weight")), state);
}

InferenceState MambaLM::new_state(int64_t batch) const {
  InferenceState state;
  for (int64_t i = 0; i < config_.n_layer; ++i)
    state.layers.push_back({Tensor::zeros({batch, config_.d_inner(), config_.d_conv}, compute_, device_),
                            Tensor::zeros({batch, config_.d_inner(), config_.d_state}, dtype_, device_)});
  return state;
}

Tensor MambaLM::step(const Tensor& ids, InferenceState& state) const {
  S6_CHECK(ids.dim() == 1, "MambaLM::step: ids should be (batch) but are {}", ids.describe());
  const int64_t batch = ids.size(0);
  Tensor logits = forward(ids.view({batch, 1}), &state);
  return logits.view({batch, logits.size(2)});
}

}  // namespace s6
