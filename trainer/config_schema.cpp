// The config schema: typed readers/writers for every key, and the did-you-mean search.
#include "trainer/config_schema.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <utility>

namespace s6::trainer::schema {
namespace {

constexpr int64_t kMaxInt = std::numeric_limits<int64_t>::max();
constexpr double kInf = std::numeric_limits<double>::infinity();

// Accessor for one member, usable on const and non-const configs alike.
#define S6_MEMBER(expr) \
  [](auto& c) -> auto& { return c.expr; }

// Parses an integer strictly: the whole scalar must be consumed. "1e5" and "1000.0" are accepted
// when they are exact integers, since people write step counts that way.
bool parse_int(const std::string& s, int64_t& out) {
  if (s.empty()) return false;
  errno = 0;
  char* end = nullptr;
  long long v = std::strtoll(s.c_str(), &end, 10);
  if (*end == '\0' && errno == 0) {
    out = v;
    return true;
  }
  errno = 0;
  double d = std::strtod(s.c_str(), &end);
  if (*end != '\0' || errno != 0 || !std::isfinite(d) || d != std::floor(d) || std::fabs(d) > 9e18)
    return false;
  out = static_cast<int64_t>(d);
  return true;
}

// Finite numbers only: a config asking for lr = .inf is a mistake, not a setting.
bool parse_double(const std::string& s, double& out) {
  if (s.empty()) return false;
  errno = 0;
  char* end = nullptr;
  double d = std::strtod(s.c_str(), &end);
  if (*end != '\0' || errno != 0 || !std::isfinite(d)) return false;
  out = d;
  return true;
}

std::string int_range(int64_t lo, int64_t hi) {
  if (hi == kMaxInt) return fmt::format("an integer >= {}", lo);
  return fmt::format("an integer in [{}, {}]", lo, hi);
}

// Reads one integer with bounds; returns false (after reporting) when the value is unusable.
bool read_int(const YAML::Node& n, int64_t lo, int64_t hi, const std::string& suffix, const Report& report,
              int64_t& out) {
  const std::string want = int_range(lo, hi);
  int64_t v = 0;
  if (!n.IsScalar() || !parse_int(n.Scalar(), v)) {
    report(suffix, fmt::format("expected {}, got {}", want, describe(n)));
    return false;
  }
  if (v < lo || v > hi) {
    report(suffix, fmt::format("expected {}, got {}", want, v));
    return false;
  }
  out = v;
  return true;
}

template <class Get> Field int_field(const char* path, Get get, int64_t lo, int64_t hi = kMaxInt) {
  return {path,
          [=](const YAML::Node& n, TrainConfig& c, const Report& r) { read_int(n, lo, hi, "", r, get(c)); },
          [=](const TrainConfig& c) { return fmt::format("{}", get(c)); }};
}

// The seed is a uint64 (Philox key): negative or fractional values are rejected.
Field seed_field() {
  return {"seed",
          [](const YAML::Node& n, TrainConfig& c, const Report& r) {
            const std::string s = n.IsScalar() ? n.Scalar() : "";
            errno = 0;
            char* end = nullptr;
            unsigned long long v = s.empty() ? 0 : std::strtoull(s.c_str(), &end, 10);
            if (s.empty() || s[0] == '-' || *end != '\0' || errno != 0) {
              r("", fmt::format("expected an integer in [0, 2^64), got {}", describe(n)));
              return;
            }
            c.seed = v;
          },
          [](const TrainConfig& c) { return fmt::format("{}", c.seed); }};
}

// Bounds with open/closed ends, for messages like "a number > 0" or "a number in [0, 1)".
struct Bounds {
  double lo = -kInf;
  bool lo_open = false;
  double hi = kInf;
  bool hi_open = false;
  bool contains(double v) const { return (lo_open ? v > lo : v >= lo) && (hi_open ? v < hi : v <= hi); }
  std::string text() const {
    if (hi == kInf) return fmt::format("a number {} {}", lo_open ? ">" : ">=", lo);
    return fmt::format("a number in {}{}, {}{}", lo_open ? "(" : "[", lo, hi, hi_open ? ")" : "]");
  }
};
const Bounds kPositive{0, true};
const Bounds kNonNegative{0, false};

// fmt's shortest representation (reads back to the same double), spelled so that YAML 1.1 readers
// such as PyYAML read a float too: they want a dot and a signed exponent, so 1e-05 (a string to
// them) is written 1.0e-05, and 1 is written 1.0.
std::string yaml_float(double v) {
  std::string s = fmt::format("{}", v);
  const size_t e = s.find_first_of("eE");
  if (s.find('.') == std::string::npos) s.insert(e == std::string::npos ? s.size() : e, ".0");
  return s;
}

template <class Get> Field double_field(const char* path, Get get, Bounds b) {
  return {path,
          [=](const YAML::Node& n, TrainConfig& c, const Report& r) {
            double v = 0;
            if (!n.IsScalar() || !parse_double(n.Scalar(), v)) {
              r("", fmt::format("expected {}, got {}", b.text(), describe(n)));
            } else if (!b.contains(v)) {
              r("", fmt::format("expected {}, got {}", b.text(), n.Scalar()));
            } else {
              get(c) = v;
            }
          },
          [=](const TrainConfig& c) { return yaml_float(get(c)); }};
}

// YAML 1.1 spellings too, as yaml-cpp's own bool conversion accepts them.
template <class Get> Field bool_field(const char* path, Get get) {
  return {path,
          [=](const YAML::Node& n, TrainConfig& c, const Report& r) {
            std::string s = n.IsScalar() ? n.Scalar() : "";
            std::transform(s.begin(), s.end(), s.begin(), ::tolower);
            if (s == "true" || s == "yes" || s == "on") {
              get(c) = true;
            } else if (s == "false" || s == "no" || s == "off") {
              get(c) = false;
            } else {
              r("", fmt::format("expected true or false, got {}", describe(n)));
            }
          },
          [=](const TrainConfig& c) { return std::string(get(c) ? "true" : "false"); }};
}

// A closed set of names mapped onto values of the member's type (strings, enums, bools).
template <class T, class Get>
Field enum_field(const char* path, Get get, std::vector<std::pair<std::string, T>> choices) {
  std::string allowed;
  for (const auto& ch : choices) allowed += (allowed.empty() ? "" : ", ") + ch.first;
  return {path,
          [=](const YAML::Node& n, TrainConfig& c, const Report& r) {
            if (n.IsScalar()) {
              for (const auto& ch : choices) {
                if (ch.first == n.Scalar()) {
                  get(c) = ch.second;
                  return;
                }
              }
            }
            r("", fmt::format("expected one of {}, got {}", allowed, describe(n)));
          },
          [=](const TrainConfig& c) {
            for (const auto& ch : choices)
              if (ch.second == get(c)) return ch.first;
            return std::string("?");
          }};
}

// Free text (paths); an empty or null value means "not set". Written double-quoted so that text
// such as `null`, `123` or `a: b` reads back as the same string.
template <class Get> Field string_field(const char* path, Get get) {
  return {path,
          [=](const YAML::Node& n, TrainConfig& c, const Report& r) {
            if (n.IsNull()) {
              get(c).clear();
            } else if (n.IsScalar()) {
              get(c) = n.Scalar();
            } else {
              r("", fmt::format("expected a string, got {}", describe(n)));
            }
          },
          [=](const TrainConfig& c) {
            YAML::Emitter e;
            e << YAML::DoubleQuoted << get(c);
            return std::string(e.c_str());
          }};
}

// A list of integers >= 1 (eval.lengths, the curriculum lists); a bare integer is taken as a
// one-element list so that `eval.lengths=512` works on the command line; null or [] = empty.
template <class Get> Field int_list_field(const char* path, Get get) {
  return {path,
          [=](const YAML::Node& n, TrainConfig& c, const Report& r) {
            std::vector<int64_t> out;
            bool ok = true;
            if (n.IsSequence()) {
              for (size_t i = 0; i < n.size(); ++i) {
                int64_t v = 0;
                if (read_int(n[i], 1, kMaxInt, fmt::format("[{}]", i), r, v)) out.push_back(v);
                else ok = false;
              }
            } else if (n.IsScalar()) {
              int64_t v = 0;
              ok = read_int(n, 1, kMaxInt, "", r, v);
              out.push_back(v);
            } else if (!n.IsNull()) {
              r("", fmt::format("expected a list of integers >= 1, got {}", describe(n)));
              ok = false;
            }
            if (ok) get(c) = out;
          },
          [=](const TrainConfig& c) { return fmt::format("[{}]", fmt::join(get(c), ", ")); }};
}

// model.dt_rank: "auto" (stored as 0, i.e. ceil(d_model / 16)) or an explicit rank.
Field dt_rank_field() {
  return {"model.dt_rank",
          [](const YAML::Node& n, TrainConfig& c, const Report& r) {
            int64_t v = 0;
            if (n.IsScalar() && n.Scalar() == "auto") {
              c.model.dt_rank = 0;
            } else if (!n.IsScalar() || !parse_int(n.Scalar(), v) || v < 1) {
              r("", fmt::format("expected auto or an integer >= 1, got {}", describe(n)));
            } else {
              c.model.dt_rank = v;
            }
          },
          [](const TrainConfig& c) {
            return c.model.dt_rank > 0 ? fmt::format("{}", c.model.dt_rank) : std::string("auto");
          }};
}

std::vector<Field> build_fields() {
  using S = std::string;
  std::vector<Field> f;
  f.push_back(seed_field());
  f.push_back(enum_field<S>("device", S6_MEMBER(device), {{"auto", "auto"}, {"cpu", "cpu"}, {"cuda", "cuda"}}));
  // model.*: MambaConfig, limits as in MambaConfig::validate (checked again there).
  f.push_back(int_field("model.d_model", S6_MEMBER(model.d_model), 1));
  f.push_back(int_field("model.n_layer", S6_MEMBER(model.n_layer), 1));
  f.push_back(int_field("model.vocab_size", S6_MEMBER(model.vocab_size), 1));
  f.push_back(int_field("model.d_state", S6_MEMBER(model.d_state), 1, 256));
  f.push_back(int_field("model.d_conv", S6_MEMBER(model.d_conv), 1, 4));
  f.push_back(int_field("model.expand", S6_MEMBER(model.expand), 1));
  f.push_back(dt_rank_field());
  f.push_back(double_field("model.dt_min", S6_MEMBER(model.dt_min), kPositive));
  f.push_back(double_field("model.dt_max", S6_MEMBER(model.dt_max), kPositive));
  f.push_back(double_field("model.dt_init_floor", S6_MEMBER(model.dt_init_floor), kNonNegative));
  f.push_back(double_field("model.dt_scale", S6_MEMBER(model.dt_scale), kPositive));
  f.push_back(enum_field<bool>("model.dt_init", S6_MEMBER(model.dt_init_random),
                               {{"random", true}, {"constant", false}}));
  f.push_back(bool_field("model.conv_bias", S6_MEMBER(model.conv_bias)));
  f.push_back(bool_field("model.bias", S6_MEMBER(model.bias)));
  f.push_back(double_field("model.norm_eps", S6_MEMBER(model.norm_eps), kPositive));
  f.push_back(int_field("model.pad_vocab_size_multiple", S6_MEMBER(model.pad_vocab_size_multiple), 1));
  f.push_back(bool_field("model.tie_embeddings", S6_MEMBER(model.tie_embeddings)));
  f.push_back(enum_field<LayerKind>("model.layer", S6_MEMBER(model.layer),
                                    {{"s6", LayerKind::S6}, {"s4", LayerKind::S4}}));
  f.push_back(enum_field<BlockKind>("model.block", S6_MEMBER(model.block),
                                    {{"mamba", BlockKind::Mamba}, {"no_gate", BlockKind::NoGate}}));
  // task.*: every task needs at least 3 tokens (copying: noise, data, marker).
  f.push_back(enum_field<S>("task.name", S6_MEMBER(task.name),
                            {{"copying", "copying"},
                             {"selective_copying", "selective_copying"},
                             {"induction_heads", "induction_heads"},
                             {"tokens", "tokens"},
                             {"bytes", "bytes"}}));
  f.push_back(int_field("task.vocab_size", S6_MEMBER(task.vocab_size), 3));
  f.push_back(int_field("task.seq_len", S6_MEMBER(task.seq_len), 1));
  f.push_back(int_field("task.num_tokens", S6_MEMBER(task.num_tokens), 1));
  f.push_back(
      enum_field<S>("task.loss_positions", S6_MEMBER(task.loss_positions), {{"last", "last"}, {"all", "all"}}));
  f.push_back(int_list_field("task.curriculum_lengths", S6_MEMBER(task.curriculum_lengths)));
  f.push_back(int_list_field("task.curriculum_steps", S6_MEMBER(task.curriculum_steps)));
  f.push_back(string_field("data.train_glob", S6_MEMBER(data.train_glob)));
  f.push_back(string_field("data.val_glob", S6_MEMBER(data.val_glob)));
  f.push_back(double_field("data.val_fraction", S6_MEMBER(data.val_fraction), Bounds{0, false, 1, true}));
  f.push_back(enum_field<S>("data.format", S6_MEMBER(data.format), {{"llmc", "llmc"}, {"raw", "raw"}}));
  f.push_back(enum_field<S>("data.dtype", S6_MEMBER(data.dtype), {{"uint16", "uint16"}, {"uint32", "uint32"}}));
  f.push_back(double_field("optim.lr", S6_MEMBER(optim.lr), kPositive));
  f.push_back(double_field("optim.beta1", S6_MEMBER(optim.beta1), Bounds{0, false, 1, true}));
  f.push_back(double_field("optim.beta2", S6_MEMBER(optim.beta2), Bounds{0, false, 1, true}));
  f.push_back(double_field("optim.eps", S6_MEMBER(optim.eps), kPositive));
  f.push_back(double_field("optim.weight_decay", S6_MEMBER(optim.weight_decay), kNonNegative));
  f.push_back(double_field("optim.grad_clip", S6_MEMBER(optim.grad_clip), kNonNegative));
  f.push_back(enum_field<S>("schedule.kind", S6_MEMBER(schedule.kind),
                            {{"constant", "constant"}, {"cosine", "cosine"}}));
  f.push_back(int_field("schedule.warmup_steps", S6_MEMBER(schedule.warmup_steps), 0));
  f.push_back(double_field("schedule.min_lr", S6_MEMBER(schedule.min_lr), kNonNegative));
  f.push_back(int_field("train.steps", S6_MEMBER(train.steps), 1));
  f.push_back(int_field("train.batch_size", S6_MEMBER(train.batch_size), 1));
  f.push_back(int_field("train.log_every", S6_MEMBER(train.log_every), 1));
  f.push_back(
      enum_field<S>("train.on_nonfinite", S6_MEMBER(train.on_nonfinite), {{"skip", "skip"}, {"halt", "halt"}}));
  f.push_back(int_field("train.max_consecutive_skips", S6_MEMBER(train.max_consecutive_skips), 1));
  f.push_back(double_field("train.max_weight_abs", S6_MEMBER(train.max_weight_abs), kNonNegative));
  f.push_back(double_field("train.max_minutes", S6_MEMBER(train.max_minutes), kNonNegative));
  f.push_back(
      enum_field<S>("train.precision", S6_MEMBER(train.precision), {{"fp32", "fp32"}, {"bf16", "bf16"}}));
  f.push_back(enum_field<S>("train.cuda_graph", S6_MEMBER(train.cuda_graph),
                            {{"auto", "auto"}, {"on", "on"}, {"off", "off"}}));
  f.push_back(int_field("eval.every", S6_MEMBER(eval.every), 0));
  f.push_back(int_list_field("eval.lengths", S6_MEMBER(eval.lengths)));
  f.push_back(int_field("eval.num_examples", S6_MEMBER(eval.num_examples), 1));
  f.push_back(int_field("eval.batch_size", S6_MEMBER(eval.batch_size), 1));
  f.push_back(int_field("checkpoint.every", S6_MEMBER(checkpoint.every), 0));
  f.push_back(int_field("checkpoint.keep_last", S6_MEMBER(checkpoint.keep_last), 1));
  f.push_back(int_field("checkpoint.keep_every", S6_MEMBER(checkpoint.keep_every), 0));
  f.push_back(double_field("dist.bucket_mb", S6_MEMBER(dist.bucket_mb), kPositive));
  f.push_back(string_field("run.dir", S6_MEMBER(run_dir)));
  f.push_back(string_field("init.from", S6_MEMBER(init_from)));
  return f;
}

}  // namespace

const std::vector<Field>& fields() {
  static const std::vector<Field> all = build_fields();
  return all;
}

const Field* find_field(const std::string& path) {
  for (const Field& f : fields())
    if (f.path == path) return &f;
  return nullptr;
}

bool is_section(const std::string& path) {
  for (const Field& f : fields())
    if (f.path.size() > path.size() && f.path.compare(0, path.size(), path) == 0 && f.path[path.size()] == '.')
      return true;
  return false;
}

size_t edit_distance(const std::string& a, const std::string& b) {
  const size_t n = a.size(), m = b.size();
  std::vector<std::vector<size_t>> d(n + 1, std::vector<size_t>(m + 1));
  for (size_t i = 0; i <= n; ++i) d[i][0] = i;
  for (size_t j = 0; j <= m; ++j) d[0][j] = j;
  for (size_t i = 1; i <= n; ++i) {
    for (size_t j = 1; j <= m; ++j) {
      const size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[n][m];
}

std::string did_you_mean(const std::string& path) {
  // A known key put in the wrong section ("train.lr", or "lr" at the top) is the likeliest slip.
  const std::string leaf = path.substr(path.rfind('.') + 1);
  for (const Field& f : fields()) {
    const std::string fleaf = f.path.substr(f.path.rfind('.') + 1);
    if (fleaf == leaf && f.path != path) return fmt::format(" (did you mean `{}`?)", f.path);
  }
  std::vector<std::string> candidates;
  for (const Field& f : fields()) {
    candidates.push_back(f.path);
    const size_t dot = f.path.find('.');
    if (dot != std::string::npos) candidates.push_back(f.path.substr(0, dot));
  }
  std::string best;
  size_t best_d = std::string::npos;
  for (const std::string& c : candidates) {
    const size_t d = edit_distance(path, c);
    if (d < best_d) best_d = d, best = c;
  }
  // Close enough to be a typo: 1 edit for short keys, up to 3 for long ones.
  const size_t limit = std::max<size_t>(1, std::min<size_t>(3, path.size() / 4));
  if (best_d <= limit) return fmt::format(" (did you mean `{}`?)", best);
  return "";
}

std::string describe(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Scalar: return fmt::format("'{}'", node.Scalar());
    case YAML::NodeType::Sequence: return "a list";
    case YAML::NodeType::Map: return "a mapping";
    default: return "an empty value";
  }
}

}  // namespace s6::trainer::schema
