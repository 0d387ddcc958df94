// Resume policy and state transfer between checkpoints and the live model/optimizer.
#include "trainer/resume.h"

#include <filesystem>
#include <fstream>
#include <regex>

#include "core/log.h"
#include "trainer/config_schema.h"
#include "trainer/io_error.h"

namespace s6::trainer {

namespace fs = std::filesystem;

std::map<std::string, std::string> model_shape_of(const TrainConfig& config) {
  std::map<std::string, std::string> out;
  for (const std::string& key : model_shape_keys()) {
    const schema::Field* field = schema::find_field(key);
    S6_CHECK(field, "model_shape_keys: {} is not a config key", key);
    out[key] = field->write(config);  // plain scalars, as checkpoints have always stored them
  }
  return out;
}

void check_model_shape(const std::map<std::string, std::string>& saved, const TrainConfig& config,
                       const std::string& source, bool for_init) {
  std::string problems;
  for (const auto& [key, value] : model_shape_of(config)) {
    auto it = saved.find(key);
    std::string old = it == saved.end() ? "(absent)" : it->second;
    if (old != value)
      problems += fmt::format("{}: the checkpoint {} has {} but the config has {}\n", key, source, old, value);
  }
  if (!problems.empty() && for_init)
    throw ConfigError(problems +
                      "init.from copies weights into a model of the same shape: set these model keys to "
                      "the checkpoint's values");
  if (!problems.empty())
    throw ConfigError(
        problems +
        "refusing to resume into a model of a different shape (a model of another shape starts in "
        "another run.dir, or here with --resume never --overwrite)");
}

void check_fits_model(const CheckpointContents& c, const MambaLM& model, bool with_optimizer) {
  using Group = std::map<std::string, Tensor> CheckpointContents::*;
  std::vector<std::pair<const char*, Group>> groups = {{"/model", &CheckpointContents::model}};
  if (with_optimizer) {
    groups.emplace_back("/optimizer/exp_avg", &CheckpointContents::exp_avg);
    groups.emplace_back("/optimizer/exp_avg_sq", &CheckpointContents::exp_avg_sq);
  }
  const auto& params = model.parameters();
  for (const auto& [group, member] : groups) {
    const std::map<std::string, Tensor>& held = c.*member;
    for (const NamedParameter& p : params) {
      auto it = held.find(p.name);
      if (it == held.end())
        throw CheckpointError(fmt::format("{}: dataset {}/{} is missing", c.path, group, p.name));
      if (it->second.shape() != p.tensor.shape())
        throw CheckpointError(fmt::format("{}: dataset {}/{} has shape {} but the model needs {}", c.path,
                                          group, p.name, shape_str(it->second.shape()),
                                          shape_str(p.tensor.shape())));
    }
    if (held.size() != params.size()) {
      for (const auto& [name, t] : held) {
        bool known = false;
        for (const NamedParameter& p : params) known = known || p.name == name;
        if (!known)
          throw CheckpointError(
              fmt::format("{}: dataset {}/{} is not a parameter of this model", c.path, group, name));
      }
    }
  }
}

std::optional<CheckpointContents> find_resume_checkpoint(const TrainConfig& config, const std::string& mode,
                                                         const MambaLM& model) {
  if (mode == "never") {
    log::info("resume: never -> fresh start");
    return std::nullopt;
  }
  if (mode != "auto") {
    CheckpointContents c = read_checkpoint(mode);
    check_model_shape(c.meta.model_shape, config, mode);
    check_fits_model(c, model, true);
    log::info("resume: from {} (step {})", mode, c.meta.step);
    return c;
  }
  const std::string dir = (fs::path(config.run_dir) / "checkpoints").string();
  auto all = list_checkpoints(dir);
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    try {
      CheckpointContents c = read_checkpoint(it->second);
      check_model_shape(c.meta.model_shape, config, it->second);
      check_fits_model(c, model, true);
      log::info("resume: auto -> {} (step {})", it->second, c.meta.step);
      return c;
    } catch (const CheckpointError& e) {
      log::warn("resume: skipping unusable checkpoint: {}", e.what());
    }
  }
  log::info("resume: auto -> no valid checkpoint in {}, fresh start", dir);
  return std::nullopt;
}

CheckpointContents capture(const MambaLM& model, AdamW& optimizer, const TrainConfig& config, int64_t step,
                           int64_t world_size, int64_t consecutive_skips) {
  CheckpointContents c;
  c.meta.step = step;
  c.meta.seed = config.seed;
  c.meta.world_size = world_size;
  c.meta.config_yaml = to_yaml(config);
  c.meta.model_shape = model_shape_of(config);
  c.meta.optimizer_step = optimizer.step_count();
  c.meta.consecutive_skips = consecutive_skips;
  const auto& params = model.parameters();
  for (size_t i = 0; i < params.size(); ++i) {
    c.model[params[i].name] = params[i].tensor;
    c.exp_avg[params[i].name] = optimizer.exp_avg()[i];
    c.exp_avg_sq[params[i].name] = optimizer.exp_avg_sq()[i];
  }
  return c;
}

namespace {
void copy_named(const std::map<std::string, Tensor>& from, const std::string& group, const std::string& name,
                Tensor& into) {
  auto it = from.find(name);
  if (it == from.end()) throw CheckpointError(fmt::format("checkpoint has no dataset {}/{}", group, name));
  if (it->second.shape() != into.shape())
    throw CheckpointError(fmt::format("checkpoint dataset {}/{} has shape {} but the model needs {}", group,
                                      name, shape_str(it->second.shape()), shape_str(into.shape())));
  into.copy_(it->second);
}
}  // namespace

void restore(const CheckpointContents& c, MambaLM& model, AdamW* optimizer) {
  auto& params = model.parameters();
  for (size_t i = 0; i < params.size(); ++i) {
    copy_named(c.model, "/model", params[i].name, params[i].tensor);
    if (optimizer) {
      copy_named(c.exp_avg, "/optimizer/exp_avg", params[i].name, optimizer->exp_avg()[i]);
      copy_named(c.exp_avg_sq, "/optimizer/exp_avg_sq", params[i].name, optimizer->exp_avg_sq()[i]);
    }
  }
  if (optimizer) optimizer->set_step_count(c.meta.optimizer_step);
}

void truncate_metrics(const std::string& path, int64_t step) {
  std::ifstream in(path);
  if (!in) return;
  std::string line, kept;
  static const std::regex step_re(R"re("step":\s*(-?\d+))re");
  while (std::getline(in, line)) {
    std::smatch m;
    if (std::regex_search(line, m, step_re) && std::stoll(m[1]) > step) continue;
    kept += line + "\n";
  }
  in.close();
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << kept;
    out.flush();
    if (!out) throw_io("write", tmp, errno);
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) throw_io("replace", path, ec.value());
}

}  // namespace s6::trainer
