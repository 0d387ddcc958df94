// The config schema: one entry per YAML key (path, how to read it into TrainConfig, how to write it).
#pragma once
#include <yaml-cpp/yaml.h>

#include <functional>
#include <string>
#include <vector>

#include "trainer/config.h"

namespace s6::trainer::schema {

// Reports one problem of a field: `suffix` extends the path (e.g. "[2]" for a list element).
using Report = std::function<void(const std::string& suffix, const std::string& message)>;

struct Field {
  std::string path;  // dotted YAML path, e.g. "optim.lr"; at most one dot
  // Reads `node` into the config; reports instead of throwing so every problem is collected.
  std::function<void(const YAML::Node& node, TrainConfig& config, const Report& report)> read;
  // The value as one line of YAML (flow style), such that `read` gives it back exactly.
  std::function<std::string(const TrainConfig& config)> write;
};

// Every key, in the order to_yaml writes them (top-level scalars first, then section by section).
const std::vector<Field>& fields();
const Field* find_field(const std::string& path);
// True for "model", "train", ...: a mapping whose keys are fields.
bool is_section(const std::string& path);

// Optimal-string-alignment edit distance (a transposition counts as one edit, as typos do).
size_t edit_distance(const std::string& a, const std::string& b);
// " (did you mean `x.y`?)" for the nearest known key, or "" when none is close.
std::string did_you_mean(const std::string& path);

// Describes a YAML value for messages: "'abc'", "a list", "a mapping", "an empty value".
std::string describe(const YAML::Node& node);

}  // namespace s6::trainer::schema
