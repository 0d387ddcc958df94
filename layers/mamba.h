// The Mamba modules: MambaMixer (SPEC 1.3), MambaBlock (pre-norm residual), MambaLM (embedding,
// blocks, final norm, tied head). Parameters live in one ordered store under reference names.
#pragma once
#include <map>
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

// Per-layer recurrent state (SPEC 4.3): the last d_conv raw conv inputs and the SSM state.
struct LayerState {
  Tensor conv_state;  // (batch, d_inner, d_conv)
  Tensor ssm_state;   // (batch, d_inner, d_state)
};
struct InferenceState {
  std::vector<LayerState> layers;
};

class MambaMixer {
 public:
  MambaMixer(const MambaConfig& config, std::map<std::string, Tensor> params);
  // hidden (batch, length, d_model) -> (batch, length, d_model). With a state, the sequence
  // continues from it and the state is advanced to the sequence's end (no gradient through it).
  Tensor forward(const Tensor& hidden, LayerState* state = nullptr) const;

 private:
  Tensor param(const char* name) const;
  MambaConfig config_;
  std::map<std::string, Tensor> params_;  // keyed by the name after "mixer."
};

class MambaBlock {
 public:
  MambaBlock(const MambaConfig& config, Tensor norm_weight, MambaMixer mixer);
  // Fused "add -> norm -> mixer": returns {mixer output, new residual}. residual may be undefined
  // (first block).
  std::pair<Tensor, Tensor> forward(const Tensor& hidden, const Tensor& residual,
                                    LayerState* state = nullptr) const;

 private:
  MambaConfig config_;
  Tensor norm_weight_;
  MambaMixer mixer_;
};

class MambaLM {
 public:
  // Builds and initializes every parameter as the reference does (SPEC 1.4) from `seed`.
  MambaLM(const MambaConfig& config, uint64_t seed, DType dtype = DType::Float32,
          Device device = Device::CPU);

  // ids (batch, length) int -> logits (batch, length, padded_vocab).
  Tensor forward(const Tensor& ids, InferenceState* state = nullptr) const;
  // The same from given input embeddings (batch, length, d_model), e.g. for gradient checks.
  Tensor forward_embeddings(const Tensor& embeddings, InferenceState* state = nullptr) const;

  // Zero recurrent state for `batch` sequences; prefill = forward(ids, &state).
  InferenceState new_state(int64_t batch) const;
  // One token per sequence: ids (batch) -> logits (batch, padded_vocab); advances the state.
  Tensor step(const Tensor& ids, InferenceState& state) const;

  const MambaConfig& config() const { return config_; }
  std::vector<NamedParameter>& parameters() { return params_; }
  const std::vector<NamedParameter>& parameters() const { return params_; }
  Tensor parameter(const std::string& name) const;  // throws naming the missing parameter
  int64_t num_parameters() const;
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }

 private:
  void build_modules();
  MambaConfig config_;
  DType dtype_;
  Device device_;
  std::vector<NamedParameter> params_;
  std::vector<MambaBlock> blocks_;
};

}  // namespace s6
