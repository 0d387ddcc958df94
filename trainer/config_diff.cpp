// Key-by-key comparison of a checkpoint's config with the current one (trainer/config_diff.h).
#include "trainer/config_diff.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <map>

#include "core/log.h"

namespace s6::trainer {

namespace {

// "section.key" -> value text, over the two levels to_yaml writes.
std::map<std::string, std::string> flatten(const std::string& yaml) {
  std::map<std::string, std::string> out;
  YAML::Node root = YAML::Load(yaml);
  if (!root.IsMap()) return out;
  for (auto it = root.begin(); it != root.end(); ++it) {
    const std::string key = it->first.Scalar();
    if (it->second.IsMap()) {
      for (auto jt = it->second.begin(); jt != it->second.end(); ++jt)
        out[key + "." + jt->first.Scalar()] = YAML::Dump(jt->second);
    } else {
      out[key] = YAML::Dump(it->second);
    }
  }
  return out;
}

// Keys that change which examples are drawn, or what is being trained: a resume across them is
// no longer the same run.
bool refused_on_resume(const std::string& key) {
  return key == "seed" || key == "train.batch_size" || key.rfind("task.", 0) == 0 ||
         key.rfind("model.", 0) == 0;
}

}  // namespace

void check_resume_config(const CheckpointContents& resumed, const TrainConfig& config, bool allow_change) {
  const std::string& source = resumed.path;
  if (config.train.steps < resumed.meta.step)
    throw ConfigError(
        fmt::format("train.steps: {} is below the step of the checkpoint {} ({}); raise train.steps, "
                    "or start anew with --resume never --overwrite or another run.dir",
                    config.train.steps, source, resumed.meta.step));
  std::map<std::string, std::string> saved;
  try {
    saved = flatten(resumed.meta.config_yaml);
  } catch (const YAML::Exception& e) {
    log::warn("resume: the config stored in {} cannot be parsed ({}); changes are not checked", source, e.msg);
    return;
  }
  std::string refused;
  for (const auto& [key, now] : flatten(to_yaml(config))) {
    auto it = saved.find(key);
    if (it == saved.end() || it->second == now) continue;
    if (!refused_on_resume(key)) {
      log::info("resume: {} changed from {} to {} (allowed)", key, it->second, now);
    } else if (allow_change) {
      log::warn("resume: {} changed from {} to {} (accepted by --allow-config-change)", key, it->second, now);
    } else {
      refused += fmt::format("{}: the checkpoint {} was trained with {}, the config now has {}\n", key, source,
                             it->second, now);
    }
  }
  if (!refused.empty())
    throw ConfigError(refused +
                      "refusing to resume: data, seed and model keys must match the checkpoint's (pass "
                      "--allow-config-change to resume anyway, or start anew in another run.dir)");
}

}  // namespace s6::trainer
