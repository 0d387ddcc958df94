// Config loading: YAML walk (duplicates, unknown keys), overrides, schema reads, cross checks, to_yaml.
#include "trainer/config.h"

// GCC 12 flags yaml-cpp 0.7's own node lookups (impl.h) as dangling; a known false positive.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#pragma GCC diagnostic ignored "-Wdangling-pointer"
#endif
#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "core/error.h"
#include "trainer/config_schema.h"

namespace s6::trainer {
namespace {

using schema::describe;
using schema::Field;

// A key's final value and where it came from ("configs/x.yaml:12" or "override `k=v`").
struct Entry {
  YAML::Node node;
  std::string where;
};

std::string join_path(const std::string& prefix, const std::string& key) {
  return prefix.empty() ? key : prefix + "." + key;
}

std::string trim(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t"), e = s.find_last_not_of(" \t");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

class Loader {
 public:
  explicit Loader(std::string source) : source_(std::move(source)) {}

  // Walks one mapping of the file (from_file) or of an override value. Duplicates are checked per
  // mapping, so an override replacing a file value is not a duplicate.
  void collect(const YAML::Node& map, const std::string& prefix, const std::string& where_override) {
    std::map<std::string, std::string> seen;  // key -> where it was first seen
    for (auto it = map.begin(); it != map.end(); ++it) {
      const YAML::Node& key = it->first;
      const YAML::Node& value = it->second;
      const std::string where = where_override.empty() ? fmt::format("{}:{}", source_, key.Mark().line + 1)
                                                       : where_override;
      if (!key.IsScalar()) {
        add(prefix.empty() ? source_ : prefix, "keys must be plain names, got " + describe(key), where);
        continue;
      }
      const std::string path = join_path(prefix, key.Scalar());
      auto [first, inserted] = seen.emplace(key.Scalar(), where);
      if (!inserted) {
        add(path, fmt::format("duplicate key (first set at {})", first->second), where);
        bad_.insert(path);
        continue;
      }
      place(path, value, where, !where_override.empty());
    }
  }

  void apply_override(const std::string& text) {
    const size_t eq = text.find('=');
    const std::string where = fmt::format("override `{}`", text);
    if (eq == std::string::npos || trim(text.substr(0, eq)).empty()) {
      problems_.push_back(fmt::format("{}: an override must look like key=value, e.g. optim.lr=1e-3", text));
      return;
    }
    const std::string path = trim(text.substr(0, eq));
    YAML::Node value;
    try {
      value = YAML::Load(text.substr(eq + 1));
    } catch (const YAML::Exception& e) {
      add(path, fmt::format("cannot parse the value as YAML: {}", e.msg), where);
      return;
    }
    place(path, value, where, true);
  }

  TrainConfig read(int64_t world_size) {
    TrainConfig c;
    for (const Field& f : schema::fields()) {
      auto it = values_.find(f.path);
      if (it == values_.end()) continue;
      f.read(it->second.node, c, [&](const std::string& suffix, const std::string& msg) {
        add(f.path + suffix, msg, it->second.where);
        bad_.insert(f.path);
      });
    }
    // The model must cover the task's tokens; unset, it is exactly the task's vocabulary.
    if (!values_.count("model.vocab_size")) c.model.vocab_size = c.task.vocab_size;
    // Language modelling scores every next token.
    if (!values_.count("task.loss_positions") && (c.task.name == "tokens" || c.task.name == "bytes"))
      c.task.loss_positions = "all";
    if (c.run_dir.empty()) c.run_dir = "runs/" + std::filesystem::path(source_).stem().string();
    check(c, world_size);
    return c;
  }

  void throw_if_problems() const {
    if (problems_.empty()) return;
    std::string text;
    for (const std::string& p : problems_) text += (text.empty() ? "" : "\n") + p;
    throw ConfigError(text);
  }

 private:
  // Records the value of a known key, walks into a section, or reports an unknown key.
  void place(const std::string& path, const YAML::Node& value, const std::string& where, bool from_override) {
    if (schema::find_field(path)) {
      values_[path] = {value, where};
    } else if (schema::is_section(path)) {
      if (value.IsMap()) {
        collect(value, path, from_override ? where : "");
      } else if (!value.IsNull()) {
        add(path, fmt::format("expected a mapping of {}.* keys, got {}", path, describe(value)), where);
      }
    } else {
      add(path, "unknown key" + schema::did_you_mean(path), where);
    }
  }

  void add(const std::string& path, const std::string& msg, const std::string& where = "") {
    problems_.push_back(where.empty() ? fmt::format("{}: {}", path, msg)
                                      : fmt::format("{}: {} ({})", path, msg, where));
  }
  // Cross-field problems point at where the first key was set, when it was set at all.
  void add_at(const std::string& path, const std::string& msg, const std::string& key = "") {
    auto it = values_.find(key.empty() ? path : key);
    add(path, msg, it == values_.end() ? "" : it->second.where);
  }
  // Cross-field checks skip keys that already have a problem: their value is only the default.
  bool ok(std::initializer_list<const char*> paths) const {
    for (const char* p : paths)
      if (bad_.count(p)) return false;
    return true;
  }

  void check(const TrainConfig& c, int64_t world_size) {
    if (world_size < 1) {
      problems_.push_back(fmt::format("world_size: must be >= 1, got {}", world_size));
    } else if (ok({"train.batch_size"}) && c.train.batch_size % world_size != 0) {
      add_at("train.batch_size",
             fmt::format("{} is not divisible by the number of ranks ({})", c.train.batch_size, world_size));
    }
    const bool copying = c.task.name == "copying" || c.task.name == "selective_copying";
    const bool text = c.task.name == "tokens" || c.task.name == "bytes";
    // The shortest sequence each task can generate (data/copying.h, data/induction.h).
    const int64_t min_len = copying ? 2 * c.task.num_tokens + 1 : text ? 1 : 4;
    const std::string len_rule =
        copying ? fmt::format(
                      "{} needs > 2 * task.num_tokens = {} (M data tokens, M markers and at "
                      "least one noise token)",
                      c.task.name, 2 * c.task.num_tokens)
        : text ? c.task.name + " needs >= 1"
               : std::string("induction_heads needs >= 4");
    if (text) check_text(c);
    if (ok({"task.name", "task.num_tokens", "task.seq_len"}) && c.task.seq_len < min_len)
      add_at("task.seq_len", fmt::format("{}, got {}", len_rule, c.task.seq_len));
    // Every length the run generates (evaluation, curriculum phases) must fit the task too.
    for (auto [key, lengths] : {std::pair{"eval.lengths", &c.eval.lengths},
                                std::pair{"task.curriculum_lengths", &c.task.curriculum_lengths}}) {
      if (!ok({"task.name", "task.num_tokens", key})) continue;
      for (size_t i = 0; i < lengths->size(); ++i)
        if ((*lengths)[i] < min_len)
          add_at(fmt::format("{}[{}]", key, i), fmt::format("{}, got {}", len_rule, (*lengths)[i]), key);
    }
    if (ok({"task.curriculum_lengths", "task.curriculum_steps", "train.steps"})) {
      const auto& lens = c.task.curriculum_lengths;
      const auto& steps = c.task.curriculum_steps;
      int64_t total = 0;
      for (int64_t s : steps) total += s;
      if (lens.size() != steps.size())
        add_at("task.curriculum_steps",
               fmt::format("expected one step count per entry of task.curriculum_lengths ({}), got {}",
                           lens.size(), steps.size()));
      else if (!steps.empty() && total >= c.train.steps)
        add_at("task.curriculum_steps",
               fmt::format("the curriculum takes {} steps, leaving none of train.steps ({}) at "
                           "task.seq_len; expected fewer in total",
                           total, c.train.steps));
    }
    if (ok({"task.name", "task.loss_positions"}) && copying && c.task.loss_positions != "last")
      add_at("task.loss_positions", fmt::format("{} scores only the answer positions: expected last, got {}",
                                                c.task.name, c.task.loss_positions));
    if (ok({"model.vocab_size", "task.vocab_size"}) && c.model.vocab_size < c.task.vocab_size)
      add_at("model.vocab_size",
             fmt::format("must be >= task.vocab_size ({}), got {}", c.task.vocab_size, c.model.vocab_size));
    if (ok({"schedule.warmup_steps", "train.steps"}) && c.schedule.warmup_steps > c.train.steps)
      add_at("schedule.warmup_steps",
             fmt::format("must be <= train.steps ({}), got {}", c.train.steps, c.schedule.warmup_steps));
    if (ok({"schedule.kind", "schedule.min_lr", "optim.lr"}) && c.schedule.kind == "cosine" &&
        c.schedule.min_lr > c.optim.lr)
      add_at("schedule.min_lr",
             fmt::format("must be <= optim.lr ({}) for a cosine decay, got {}", c.optim.lr, c.schedule.min_lr));
    if (ok({"model.dt_min", "model.dt_max"}) && c.model.dt_max < c.model.dt_min)
      add_at("model.dt_max",
             fmt::format("must be >= model.dt_min ({}), got {}", c.model.dt_min, c.model.dt_max));
    // MambaConfig has the final word on the model; reached only when every model key read cleanly.
    bool model_clean = true;
    for (const std::string& p : bad_) model_clean = model_clean && p.rfind("model.", 0) != 0;
    if (model_clean) {
      try {
        c.model.validate();
      } catch (const s6::Error& e) {
        problems_.push_back(e.what());
      }
    }
  }

  // The file tasks name their files; whether they exist and hold tokens is checked when the task opens them.
  void check_text(const TrainConfig& c) {
    if (!ok({"task.name", "data.train_glob", "data.val_glob", "data.val_fraction", "task.vocab_size"})) return;
    if (c.data.train_glob.empty())
      add_at("data.train_glob",
             fmt::format("task.name = {} reads files: expected a glob such as "
                         "data/train_*.bin",
                         c.task.name),
             "task.name");
    if (c.data.val_glob.empty() && c.data.val_fraction <= 0)
      add_at("data.val_glob",
             "expected a glob of validation files, or data.val_fraction in (0, 1) to hold "
             "out the tail of the training files",
             "task.name");
    if (c.task.name == "bytes" && c.task.vocab_size != 256)
      add_at("task.vocab_size", fmt::format("the bytes task has one token per byte value: expected 256, got {}",
                                            c.task.vocab_size));
    if (c.task.loss_positions != "all")
      add_at("task.loss_positions", fmt::format("{} scores every next token: expected all, got {}", c.task.name,
                                                c.task.loss_positions));
  }

  std::string source_;
  std::map<std::string, Entry> values_;
  std::set<std::string> bad_;
  std::vector<std::string> problems_;
};

}  // namespace

TrainConfig load_config_text(const std::string& text, const std::string& source,
                             const std::vector<std::string>& overrides, int64_t world_size) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw ConfigError(
        fmt::format("{}:{}:{}: malformed YAML: {}", source, e.mark.line + 1, e.mark.column + 1, e.msg));
  }
  Loader loader(source);
  if (root.IsMap()) {
    loader.collect(root, "", "");
  } else if (!root.IsNull()) {
    throw ConfigError(
        fmt::format("{}: expected a mapping of keys (seed, model, task, ...) at the "
                    "top level, got {}",
                    source, describe(root)));
  }
  for (const std::string& o : overrides) loader.apply_override(o);
  TrainConfig config = loader.read(world_size);
  loader.throw_if_problems();
  return config;
}

TrainConfig load_config(const std::string& path, const std::vector<std::string>& overrides,
                        int64_t world_size) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    throw ConfigError(fmt::format("{}: cannot read the config file ({})", path,
                                  std::filesystem::exists(path, ec) ? "not a regular file" : "no such file"));
  std::ifstream in(path);
  if (!in) throw ConfigError(fmt::format("{}: cannot read the config file ({})", path, std::strerror(errno)));
  std::stringstream buf;
  buf << in.rdbuf();
  TrainConfig config = load_config_text(buf.str(), path, overrides, world_size);
  // Every task has its own data: a run that does not say which would train one by accident.
  const bool named = YAML::Load(buf.str())["task"]["name"].IsDefined() ||
                     std::any_of(overrides.begin(), overrides.end(),
                                 [](const std::string& o) { return o.rfind("task.name=", 0) == 0; });
  if (!named)
    throw ConfigError(
        fmt::format("task.name: required, one of copying, selective_copying, induction_heads "
                    "(not set in {} nor by an override)",
                    path));
  return config;
}

std::string to_yaml(const TrainConfig& config) {
  std::string out = "# s6 training config, resolved: every key, defaults filled in.\n";
  std::string section;
  for (const Field& f : schema::fields()) {
    const size_t dot = f.path.find('.');
    if (dot == std::string::npos) {
      out += fmt::format("{}: {}\n", f.path, f.write(config));
      continue;
    }
    const std::string sec = f.path.substr(0, dot);
    if (sec != section) out += sec + ":\n";
    section = sec;
    out += fmt::format("  {}: {}\n", f.path.substr(dot + 1), f.write(config));
  }
  return out;
}

int64_t training_length(const TrainConfig& config, int64_t step) {
  const auto& lens = config.task.curriculum_lengths;
  const auto& steps = config.task.curriculum_steps;
  int64_t end = 0;
  for (size_t i = 0; i < lens.size() && i < steps.size(); ++i) {
    end += steps[i];
    if (step < end) return lens[i];
  }
  return config.task.seq_len;
}

DType compute_dtype(const TrainConfig& config) {
  return config.train.precision == "bf16" ? DType::BFloat16 : DType::Float32;
}

std::vector<std::string> model_shape_keys() {
  return {"model.d_model",        "model.n_layer",
          "model.vocab_size",     "model.d_state",
          "model.d_conv",         "model.expand",
          "model.dt_rank",        "model.conv_bias",
          "model.bias",           "model.pad_vocab_size_multiple",
          "model.tie_embeddings", "model.layer",
          "model.block"};
}

}  // namespace s6::trainer
