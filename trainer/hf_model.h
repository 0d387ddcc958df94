// Hugging Face model folders (config.json + model.safetensors, as transformers' MambaForCausalLM
// saves them): s6 models written as one, and such folders read back as an s6 config and weights.
#pragma once
#include <map>
#include <optional>
#include <string>

#include "layers/mamba.h"
#include "trainer/checkpoint.h"

namespace s6::trainer {

// A folder that cannot be read as a Mamba model (missing or malformed config.json, no safetensors
// weights, a tensor missing or of the wrong shape). A CheckpointError, so `train` exits 4 on it.
struct HfFolderError : CheckpointError {
  using CheckpointError::CheckpointError;
};

struct HfModel {
  MambaConfig config;
  std::map<std::string, Tensor> weights;  // s6 (reference) parameter names, float32 CPU tensors
};

// True when `path` is a directory holding a config.json (the mark of a Hugging Face folder).
bool is_hf_folder(const std::string& path);

// Writes dir/config.json and dir/model.safetensors. Key names are transformers' (the embedding is
// backbone.embeddings.weight; a tied head is not stored, transformers ties it on load); the config
// holds transformers' MambaConfig keys, the vocabulary padded (the embedding's rows), plus a
// "mamba_ssm" entry with the same model as mamba_ssm's MambaConfig fields and an "s6" entry with
// the unpadded vocabulary. Refuses models transformers cannot express (model.layer s4, no_gate).
void write_hf_folder(const std::string& dir, const MambaConfig& config,
                     const std::map<std::string, Tensor>& weights);

// Reads config.json and the safetensors weights (model.safetensors, or the shards listed in
// model.safetensors.index.json). Accepts transformers' names and mamba_ssm's; a stored tied head
// is dropped. Checks every tensor against the config (names and shapes), naming the first misfit.
HfModel read_hf_folder(const std::string& dir);

// Throws ConfigError naming every parameter of `config` that `weights` lacks or holds with another
// shape, and every tensor the model has no use for. `source` names the weights in the message.
void check_weights_fit(const std::map<std::string, Tensor>& weights, const MambaConfig& config,
                       const std::string& source);

// init.from with a Hugging Face folder: its weights into `model` (built from the run's `config`).
// A parameter missing or of another shape is a ConfigError naming it; a differing norm epsilon is
// logged (the weights still fit but the function differs).
void init_from_hf_folder(const std::string& dir, const MambaConfig& config, MambaLM& model);

// A ready model from a Hugging Face folder, in float32 on `device` (compute dtype as MambaLM's):
// the entry point for programs that sample or evaluate a downloaded or exported model.
MambaLM load_model_from_hf_folder(const std::string& dir, Device device,
                                  std::optional<DType> compute_dtype = std::nullopt);

// Any model source as a model: a Hugging Face folder, an s6 run directory (its newest checkpoint)
// or an s6 HDF5 checkpoint file. `resolved` (if given) receives the file or folder actually read.
MambaLM load_model(const std::string& path, Device device, std::string* resolved = nullptr);

// The weights and model config of an s6 checkpoint (a file, or a run dir: its newest checkpoint).
HfModel read_s6_checkpoint(const std::string& path, std::string* resolved = nullptr);

}  // namespace s6::trainer
