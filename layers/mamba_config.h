// The Mamba model's hyper-parameters (reference defaults, docs/model.md 1.1/1.5) and its parameter list:
// names and shapes as in the reference state dict, plus each parameter's weight-decay flag.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/shape.h"

namespace s6 {

enum class LayerKind { S6, S4 };         // selective, or LTI (delta, B, C are learned constants)
enum class BlockKind { Mamba, NoGate };  // NoGate: no z branch (paper Table 1)

struct MambaConfig {
  int64_t d_model = 64;
  int64_t n_layer = 2;
  int64_t vocab_size = 16;
  int64_t d_state = 16;
  int64_t d_conv = 4;
  int64_t expand = 2;
  int64_t dt_rank = 0;  // 0 = "auto" = ceil(d_model / 16)
  double dt_min = 0.001, dt_max = 0.1, dt_init_floor = 1e-4, dt_scale = 1.0;
  bool dt_init_random = true;  // false = "constant"
  bool conv_bias = true;
  bool bias = false;  // in_proj / out_proj bias
  double norm_eps = 1e-5;
  int64_t pad_vocab_size_multiple = 8;
  bool tie_embeddings = true;
  LayerKind layer = LayerKind::S6;
  BlockKind block = BlockKind::Mamba;

  int64_t d_inner() const { return expand * d_model; }
  int64_t resolved_dt_rank() const { return dt_rank > 0 ? dt_rank : (d_model + 15) / 16; }
  int64_t padded_vocab() const {
    int64_t m = pad_vocab_size_multiple > 0 ? pad_vocab_size_multiple : 1;
    return (vocab_size + m - 1) / m * m;
  }
  // Throws s6::Error naming the first invalid field.
  void validate() const;
};

struct ParamSpec {
  std::string name;
  Shape shape;
  bool weight_decay;
};

// Every parameter of the model, in a fixed order (the order init draws random numbers in).
std::vector<ParamSpec> parameter_specs(const MambaConfig& config);
int64_t count_parameters(const MambaConfig& config);

}  // namespace s6
