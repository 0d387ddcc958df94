// Hugging Face folders: config.json (transformers' MambaConfig keys) and safetensors weights, in
// both directions, and loading a model from any source (HF folder, run dir, HDF5 checkpoint).
#include "trainer/hf_model.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "core/log.h"
#include "trainer/config.h"
#include "trainer/resume.h"
#include "trainer/safetensors.h"

namespace s6::trainer {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// transformers names the embedding module "embeddings"; the reference (and s6) "embedding".
constexpr const char* kS6Embedding = "backbone.embedding.weight";
constexpr const char* kHfEmbedding = "backbone.embeddings.weight";

[[noreturn]] void fail(const std::string& where, const std::string& what) {
  throw HfFolderError(fmt::format("{}: {}", where, what));
}

json read_json(const fs::path& path) {
  std::ifstream in(path);
  if (!in) fail(path.string(), "cannot open the file");
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    fail(path.string(), fmt::format("not valid JSON ({})", e.what()));
  }
}

// config.json value `key` as T, or `fallback` (transformers' default) when absent.
template <class T> T get_or(const json& cfg, const char* key, T fallback, const std::string& where) {
  if (!cfg.contains(key) || cfg[key].is_null()) return fallback;
  try {
    return cfg[key].get<T>();
  } catch (const json::exception&) {
    fail(where, fmt::format("config key '{}' has the value {} of the wrong type", key, cfg[key].dump()));
  }
}

MambaConfig config_from_json(const json& cfg, const std::string& where) {
  if (!cfg.is_object()) fail(where, "config.json is not a JSON object");
  const std::string type = get_or<std::string>(cfg, "model_type", "mamba", where);
  if (type != "mamba")
    fail(where, fmt::format("model_type is '{}', but only 'mamba' (Mamba-1) models are read", type));
  const std::string act = get_or<std::string>(cfg, "hidden_act", "silu", where);
  if (act != "silu") fail(where, fmt::format("hidden_act is '{}', but s6's mixer uses silu", act));
  MambaConfig m;
  m.d_model = get_or<int64_t>(cfg, "hidden_size", 768, where);
  m.n_layer = get_or<int64_t>(cfg, "num_hidden_layers", 32, where);
  m.vocab_size = get_or<int64_t>(cfg, "vocab_size", 50280, where);
  m.pad_vocab_size_multiple = 1;  // transformers' vocab_size is the embedding's row count
  m.d_state = get_or<int64_t>(cfg, "state_size", 16, where);
  m.d_conv = get_or<int64_t>(cfg, "conv_kernel", 4, where);
  m.expand = get_or<int64_t>(cfg, "expand", 2, where);
  if (cfg.contains("intermediate_size") && cfg["intermediate_size"].is_number_integer() &&
      cfg["intermediate_size"].get<int64_t>() != m.expand * m.d_model)
    fail(where, fmt::format("intermediate_size {} is not expand * hidden_size = {}",
                            cfg["intermediate_size"].get<int64_t>(), m.expand * m.d_model));
  const json rank = cfg.contains("time_step_rank") ? cfg["time_step_rank"] : json("auto");
  if (rank.is_number_integer()) m.dt_rank = rank.get<int64_t>();
  else if (!(rank.is_string() && rank.get<std::string>() == "auto"))
    fail(where, fmt::format("time_step_rank is {}, expected an integer or \"auto\"", rank.dump()));
  m.bias = get_or<bool>(cfg, "use_bias", true, where);
  m.conv_bias = get_or<bool>(cfg, "use_conv_bias", true, where);
  m.norm_eps = get_or<double>(cfg, "layer_norm_epsilon", 1e-5, where);
  m.tie_embeddings = get_or<bool>(cfg, "tie_word_embeddings", true, where);
  m.dt_min = get_or<double>(cfg, "time_step_min", 0.001, where);
  m.dt_max = get_or<double>(cfg, "time_step_max", 0.1, where);
  m.dt_init_floor = get_or<double>(cfg, "time_step_floor", 1e-4, where);
  m.dt_scale = get_or<double>(cfg, "time_step_scale", 1.0, where);
  m.dt_init_random = get_or<std::string>(cfg, "time_step_init_scheme", "random", where) != "constant";
  // An s6 export also records the vocabulary before padding.
  if (cfg.contains("s6") && cfg["s6"].is_object()) {
    const json& s6 = cfg["s6"];
    const int64_t v = get_or<int64_t>(s6, "vocab_size", m.vocab_size, where);
    const int64_t mult = get_or<int64_t>(s6, "pad_vocab_size_multiple", 1, where);
    MambaConfig padded = m;
    padded.vocab_size = v;
    padded.pad_vocab_size_multiple = mult;
    if (padded.padded_vocab() == m.vocab_size) m = padded;
  }
  try {
    m.validate();
  } catch (const std::exception& e) {
    fail(where, fmt::format("config.json describes a model s6 cannot build: {}", e.what()));
  }
  return m;
}

json config_to_json(const MambaConfig& m) {
  const int64_t r = m.resolved_dt_rank();
  return {
      {"architectures", {"MambaForCausalLM"}},
      {"model_type", "mamba"},
      {"vocab_size", m.padded_vocab()},
      {"hidden_size", m.d_model},
      {"num_hidden_layers", m.n_layer},
      {"state_size", m.d_state},
      {"expand", m.expand},
      {"intermediate_size", m.d_inner()},
      {"conv_kernel", m.d_conv},
      {"time_step_rank", r},
      {"use_bias", m.bias},
      {"use_conv_bias", m.conv_bias},
      {"hidden_act", "silu"},
      {"layer_norm_epsilon", m.norm_eps},
      {"residual_in_fp32", true},
      {"tie_word_embeddings", m.tie_embeddings},
      {"time_step_min", m.dt_min},
      {"time_step_max", m.dt_max},
      {"time_step_floor", m.dt_init_floor},
      {"time_step_scale", m.dt_scale},
      {"time_step_init_scheme", m.dt_init_random ? "random" : "constant"},
      {"torch_dtype", "float32"},
      {"s6", {{"vocab_size", m.vocab_size}, {"pad_vocab_size_multiple", m.pad_vocab_size_multiple}}},
      // mamba_ssm's MambaConfig is a dataclass that refuses unknown keys: pass it this entry,
      // MambaLMHeadModel(MambaConfig(**config["mamba_ssm"])).
      {"mamba_ssm",
       {{"d_model", m.d_model},
        {"n_layer", m.n_layer},
        {"vocab_size", m.vocab_size},
        {"ssm_cfg",
         {{"d_state", m.d_state},
          {"d_conv", m.d_conv},
          {"expand", m.expand},
          {"dt_rank", r},
          {"conv_bias", m.conv_bias},
          {"bias", m.bias}}},
        {"rms_norm", true},
        {"residual_in_fp32", true},
        {"fused_add_norm", true},
        {"pad_vocab_size_multiple", m.pad_vocab_size_multiple},
        {"tie_embeddings", m.tie_embeddings}}},
  };
}

std::map<std::string, Tensor> read_safetensors_weights(const fs::path& dir) {
  const fs::path single = dir / "model.safetensors", index = dir / "model.safetensors.index.json";
  if (fs::exists(single)) return read_safetensors(single.string()).tensors;
  if (fs::exists(index)) {
    const json idx = read_json(index);
    if (!idx.contains("weight_map") || !idx["weight_map"].is_object())
      fail(index.string(), "has no \"weight_map\" object");
    std::set<std::string> shards;
    for (const auto& [name, file] : idx["weight_map"].items()) {
      if (!file.is_string()) fail(index.string(), fmt::format("the shard of '{}' is not a file name", name));
      shards.insert(file.get<std::string>());
    }
    std::map<std::string, Tensor> all;
    for (const std::string& shard : shards)
      for (auto& [name, t] : read_safetensors((dir / shard).string()).tensors) all[name] = t;
    return all;
  }
  if (fs::exists(dir / "pytorch_model.bin"))
    fail(dir.string(),
         "holds pytorch_model.bin but no model.safetensors; s6 reads safetensors only (save the "
         "model again with transformers' save_pretrained(..., safe_serialization=True))");
  fail(dir.string(), "has no model.safetensors (nor model.safetensors.index.json)");
}

// The model section of a checkpoint's stored config. Only the model matters here, so when the
// whole config no longer loads (a data file moved, a task this build lacks) the model section is
// loaded alone, beside a stand-in task that fits its vocabulary.
MambaConfig model_config_of(const std::string& config_yaml, const std::string& file) {
  try {
    return load_config_text(config_yaml, file, {}).model;
  } catch (const ConfigError& whole) {
    try {
      YAML::Node model = YAML::Load(config_yaml)["model"];
      if (!model || !model.IsMap()) throw whole;
      YAML::Node root;
      root["model"] = model;
      const std::string vocab = model["vocab_size"] ? model["vocab_size"].as<std::string>() : "16";
      return load_config_text(
                 YAML::Dump(root), file,
                 {"task.name=copying", "task.vocab_size=" + vocab, "task.seq_len=8", "task.num_tokens=1"})
          .model;
    } catch (const std::exception&) {
      throw CheckpointError(
          fmt::format("{}: the config stored in /meta does not load: {}", file, whole.what()));
    }
  }
}

}  // namespace

bool is_hf_folder(const std::string& path) {
  std::error_code ec;
  return fs::is_directory(path, ec) && fs::exists(fs::path(path) / "config.json", ec);
}

void write_hf_folder(const std::string& dir, const MambaConfig& config,
                     const std::map<std::string, Tensor>& weights) {
  if (config.layer != LayerKind::S6 || config.block != BlockKind::Mamba)
    throw HfFolderError(
        fmt::format("{}: transformers' Mamba has only the selective (s6) layer in the gated Mamba "
                    "block; this model has model.layer {} and model.block {}",
                    dir, config.layer == LayerKind::S6 ? "s6" : "s4",
                    config.block == BlockKind::Mamba ? "mamba" : "no_gate"));
  check_weights_fit(weights, config, dir);
  std::map<std::string, Tensor> out;
  for (const auto& [name, t] : weights) out[name == kS6Embedding ? kHfEmbedding : name] = t;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail(dir, fmt::format("cannot create the folder ({})", ec.message()));
  write_safetensors((fs::path(dir) / "model.safetensors").string(), out, {{"format", "pt"}});
  const fs::path cfg = fs::path(dir) / "config.json";
  std::ofstream f(cfg);
  f << config_to_json(config).dump(2) << "\n";
  f.flush();
  if (!f) fail(cfg.string(), "cannot write the file");
}

HfModel read_hf_folder(const std::string& dir) {
  const fs::path cfg_path = fs::path(dir) / "config.json";
  HfModel m;
  m.config = config_from_json(read_json(cfg_path), cfg_path.string());
  std::map<std::string, Tensor> stored;
  try {
    stored = read_safetensors_weights(dir);
  } catch (const SafetensorsError& e) {
    throw HfFolderError(e.what());
  }
  for (auto& [name, t] : stored) {
    if (name == "lm_head.weight" && m.config.tie_embeddings) continue;  // the embedding serves as the head
    std::string s6_name = name == kHfEmbedding ? kS6Embedding : name;
    if (m.weights.count(s6_name)) fail(dir, fmt::format("holds both {} and {}", kHfEmbedding, kS6Embedding));
    m.weights[s6_name] = t;
  }
  try {
    check_weights_fit(m.weights, m.config, dir + " (weights against its config.json)");
  } catch (const ConfigError& e) {
    throw HfFolderError(e.what());
  }
  return m;
}

void check_weights_fit(const std::map<std::string, Tensor>& weights, const MambaConfig& config,
                       const std::string& source) {
  std::string problems;
  std::set<std::string> used;
  for (const ParamSpec& spec : parameter_specs(config)) {
    used.insert(spec.name);
    auto it = weights.find(spec.name);
    if (it == weights.end())
      problems += fmt::format("{}: no tensor {} (shape {})\n", source, spec.name, shape_str(spec.shape));
    else if (it->second.shape() != spec.shape)
      problems += fmt::format("{}: tensor {} has shape {} but the model needs {}\n", source, spec.name,
                              shape_str(it->second.shape()), shape_str(spec.shape));
  }
  for (const auto& [name, t] : weights)
    if (!used.count(name))
      problems += fmt::format("{}: tensor {} is not a parameter of this model\n", source, name);
  if (!problems.empty()) {
    problems.pop_back();
    throw ConfigError(problems);
  }
}

void init_from_hf_folder(const std::string& dir, const MambaConfig& config, MambaLM& model) {
  HfModel hf = read_hf_folder(dir);
  try {
    check_weights_fit(hf.weights, config, "init.from " + dir);
  } catch (const ConfigError& e) {
    throw ConfigError(
        fmt::format("{}\ninit.from copies weights into a model of the same shape: set the model keys to "
                    "the folder's config.json values (hidden_size -> model.d_model, num_hidden_layers -> "
                    "model.n_layer, vocab_size -> model.vocab_size, state_size -> model.d_state, ...)",
                    e.what()));
  }
  if (hf.config.norm_eps != config.norm_eps)
    log::warn("init.from {}: its layer_norm_epsilon is {} but model.norm_eps is {}; training uses {}", dir,
              hf.config.norm_eps, config.norm_eps, config.norm_eps);
  CheckpointContents c;
  c.model = std::move(hf.weights);
  restore(c, model, nullptr);
  log::info("init.from: weights from the Hugging Face folder {}, fresh optimizer", dir);
}

MambaLM load_model_from_hf_folder(const std::string& dir, Device device, std::optional<DType> compute_dtype) {
  HfModel hf = read_hf_folder(dir);
  MambaLM model(hf.config, /*seed=*/0, DType::Float32, device, compute_dtype);
  CheckpointContents c;
  c.model = std::move(hf.weights);
  restore(c, model, nullptr);
  return model;
}

HfModel read_s6_checkpoint(const std::string& path, std::string* resolved) {
  const std::string file = resolve_checkpoint(path);
  CheckpointContents c = read_checkpoint(file, /*model_only=*/true);
  if (resolved) *resolved = file;
  return HfModel{model_config_of(c.meta.config_yaml, file), std::move(c.model)};
}

MambaLM load_model(const std::string& path, Device device, std::string* resolved) {
  if (is_hf_folder(path)) {
    if (resolved) *resolved = path;
    return load_model_from_hf_folder(path, device);
  }
  HfModel m = read_s6_checkpoint(path, resolved);
  MambaLM model(m.config, /*seed=*/0, DType::Float32, device);
  CheckpointContents c;
  c.model = std::move(m.weights);
  restore(c, model, nullptr);
  return model;
}

}  // namespace s6::trainer
