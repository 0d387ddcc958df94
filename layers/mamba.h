// The Mamba modules: MambaMixer (docs/model.md 1.3), MambaBlock (pre-norm residual), MambaLM (embedding,
// blocks, final norm, tied head). Parameters live in one ordered store under reference names.
#pragma once
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "layers/mamba_config.h"

namespace s6 {

struct NamedParameter {
  std::string name;
  Tensor tensor;  // a leaf that requires grad
  bool weight_decay;
};

// Per-layer recurrent state (docs/model.md 4.3): the last d_conv raw conv inputs and the SSM state. A
// forward or step with a state updates these tensors in place (the buffers stay put, so a
// captured CUDA graph of the decode step can replay on them).
struct LayerState {
  Tensor conv_state;  // (batch, d_inner, d_conv), compute dtype
  Tensor ssm_state;   // (batch, d_inner, d_state), parameter dtype (float32 under mixed precision)
};
struct InferenceState {
  std::vector<LayerState> layers;
};

// Mixed precision (`compute` dtype bfloat16 over float32 parameters), as under PyTorch's bf16
// autocast with the reference's residual_in_fp32: every projection, the conv, the scan's u, delta,
// B, C, z and the logits are bf16, each weight cast per use (the cast's backward hands the
// parameter a float32 gradient); A, D, the dt bias, the scan state, the residual stream, both
// RMSNorms and the loss stay float32. With compute == the parameter dtype nothing is cast.
class MambaMixer {
 public:
  MambaMixer(const MambaConfig& config, std::map<std::string, Tensor> params, DType compute);
  // hidden (batch, length, d_model) -> (batch, length, d_model). With a state, the sequence
  // continues from it and the state is advanced to the sequence's end (no gradient through it).
  Tensor forward(const Tensor& hidden, LayerState* state = nullptr) const;

 private:
  // The parameter `name` (after "mixer."); a name the mixer lacks is an error naming it.
  Tensor param(const char* name) const;
  // The same in the compute dtype; an undefined tensor when the config has no such parameter
  // (present = false: the biases that model.bias and model.conv_bias turn off).
  Tensor compute_param(const char* name, bool present = true) const;
  MambaConfig config_;
  std::map<std::string, Tensor> params_;  // keyed by the name after "mixer."
  DType compute_;
};

class MambaBlock {
 public:
  MambaBlock(const MambaConfig& config, Tensor norm_weight, MambaMixer mixer);
  // Fused "add -> norm -> mixer": returns {mixer output (compute dtype), new residual (parameter
  // dtype)}. residual may be undefined (first block).
  std::pair<Tensor, Tensor> forward(const Tensor& hidden, const Tensor& residual,
                                    LayerState* state = nullptr) const;

 private:
  MambaConfig config_;
  Tensor norm_weight_;
  MambaMixer mixer_;
};

class MambaLM {
 public:
  // Builds and initializes every parameter as the reference does (docs/model.md 1.4) from `seed`, in
  // `dtype` (float32, or float64 for gradient checks). compute_dtype: the activations' dtype,
  // `dtype` by default; bfloat16 over float32 parameters is mixed precision (see MambaMixer).
  MambaLM(const MambaConfig& config, uint64_t seed, DType dtype = DType::Float32, Device device = Device::CPU,
          std::optional<DType> compute_dtype = std::nullopt);

  // ids (batch, length) int -> logits (batch, length, padded_vocab) in the compute dtype.
  Tensor forward(const Tensor& ids, InferenceState* state = nullptr) const;
  // The same from given input embeddings (batch, length, d_model), e.g. for gradient checks.
  Tensor forward_embeddings(const Tensor& embeddings, InferenceState* state = nullptr) const;

  // Zero recurrent state for `batch` sequences; prefill = forward(ids, &state).
  InferenceState new_state(int64_t batch) const;
  // forward(ids, &state) that computes the final norm and head at the last position only:
  // (batch, length) ids -> (batch, padded_vocab) logits. For inference (records no gradient).
  Tensor prefill(const Tensor& ids, InferenceState& state) const;
  // One token per sequence: ids (batch) -> logits (batch, padded_vocab); advances the state.
  Tensor step(const Tensor& ids, InferenceState& state) const;

  const MambaConfig& config() const { return config_; }
  std::vector<NamedParameter>& parameters() { return params_; }
  const std::vector<NamedParameter>& parameters() const { return params_; }
  Tensor parameter(const std::string& name) const;  // throws naming the missing parameter
  int64_t num_parameters() const;
  DType dtype() const { return dtype_; }
  DType compute_dtype() const { return compute_; }
  Device device() const { return device_; }

 private:
  void build_modules();
  // The blocks: {last mixer output, residual stream}; then the final norm and the head.
  std::pair<Tensor, Tensor> run_blocks(const Tensor& embeddings, InferenceState* state) const;
  Tensor head(const Tensor& hidden, const Tensor& residual) const;
  MambaConfig config_;
  DType dtype_;
  DType compute_;
  Device device_;
  std::vector<NamedParameter> params_;
  std::vector<MambaBlock> blocks_;
};

}  // namespace s6
