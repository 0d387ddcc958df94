// The trainer config (trainer/config.h): shipped configs, overrides, every error kind, round trip.
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "trainer/config.h"

using namespace s6;
using namespace s6::trainer;
namespace fs = std::filesystem;

namespace {

const fs::path kConfigs = fs::path(S6_SOURCE_DIR) / "configs";  // not __FILE__: ccache may make it relative

// The ConfigError text of loading `text` (as "test.yaml"), or "" when it loads.
std::string errors_of(const std::string& text, const std::vector<std::string>& overrides = {},
                      int64_t world_size = 1) {
  try {
    load_config_text(text, "test.yaml", overrides, world_size);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// Each problem is one line that starts with its YAML path.
bool has_line(const std::string& text, const std::string& prefix, const std::string& part = "") {
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    const std::string line = text.substr(pos, end - pos);
    if (line.rfind(prefix, 0) == 0 && has(line, part)) return true;
    pos = end + 1;
  }
  return false;
}

size_t line_count(const std::string& text) {
  return text.empty() ? 0 : std::count(text.begin(), text.end(), '\n') + 1;
}

fs::path temp_file(const std::string& name, const std::string& text) {
  const fs::path p = fs::temp_directory_path() / name;
  std::ofstream(p) << text;
  return p;
}

}  // namespace

TEST_CASE("config: every shipped config loads with the paper's values") {
  for (const char* name : {"copying", "selective_copying", "induction_heads", "copying_cpu",
                           "selective_copying_cpu", "induction_heads_cpu", "selective_copying_fast"}) {
    CAPTURE(name);
    const fs::path path = kConfigs / (std::string(name) + ".yaml");
    TrainConfig c;
    REQUIRE_NOTHROW(c = load_config(path.string(), {}));
    CHECK(c.run_dir == "runs/" + std::string(name));
    CHECK(c.model.vocab_size == c.task.vocab_size);  // defaulted from the task
    CHECK(c.optim.weight_decay == 0.0);
    if (has(name, "_cpu")) CHECK(c.device == "cpu");
  }
  TrainConfig sc = load_config((kConfigs / "selective_copying.yaml").string(), {});
  CHECK(sc.task.name == "selective_copying");
  CHECK(sc.task.seq_len == 4096);
  CHECK(sc.task.vocab_size == 16);
  CHECK(sc.task.num_tokens == 16);
  CHECK(sc.model.n_layer == 2);
  CHECK(sc.model.d_model == 64);
  CHECK(sc.train.batch_size == 64);
  CHECK(sc.optim.lr == doctest::Approx(1e-4));
  CHECK(sc.schedule.kind == "constant");
  // The 10-minute H100 variant: the paper's task and model, a length curriculum ending at 4096.
  TrainConfig fast = load_config((kConfigs / "selective_copying_fast.yaml").string(), {});
  CHECK(fast.task.seq_len == 4096);
  CHECK(fast.task.num_tokens == 16);
  CHECK(fast.model.d_model == 64);
  CHECK(fast.model.n_layer == 2);
  CHECK(fast.task.curriculum_lengths == std::vector<int64_t>{256, 1024});
  CHECK(training_length(fast, fast.train.steps - 1) == 4096);
  CHECK(load_config((kConfigs / "copying.yaml").string(), {}).task.name == "copying");

  TrainConfig ih = load_config((kConfigs / "induction_heads.yaml").string(), {});
  CHECK(ih.task.seq_len == 256);
  CHECK(ih.train.batch_size == 8);
  CHECK(ih.optim.lr == doctest::Approx(3e-3));  // the seed sweep's robust setting (README)
  CHECK(ih.optim.grad_clip == 0.0);
  CHECK(ih.train.steps == 93184);
  REQUIRE(ih.eval.lengths.size() == 15);
  for (size_t i = 0; i < 15; ++i) CHECK(ih.eval.lengths[i] == (int64_t{64} << i));

  // The LM throughput config: the reference LM shape of docs/performance.md in bf16 mixed precision.
  TrainConfig lm = load_config((kConfigs / "lm_throughput.yaml").string(), {});
  CHECK(lm.run_dir == "runs/lm_throughput");
  CHECK(lm.model.d_model == 768);
  CHECK(lm.model.n_layer == 24);
  CHECK(lm.model.padded_vocab() == 50280);
  CHECK(lm.train.batch_size * lm.task.seq_len == 8 * 2048);
  CHECK(lm.train.precision == "bf16");
  CHECK(compute_dtype(lm) == DType::BFloat16);
  CHECK(lm.task.loss_positions == "all");
}

TEST_CASE("config: overrides apply on top of the file, before validation") {
  const std::string text = "train:\n  steps: 100\n  batch_size: 0\n";
  TrainConfig c = load_config_text(
      text, "configs/my_task.yaml",
      {"train.batch_size=16", "optim.lr=3e-4", "eval.lengths=[64,128]", "device=cpu", "seed=7",
       "model={d_model: 32, n_layer: 1}", "run.dir=/tmp/somewhere", "model.dt_rank=3"});
  CHECK(c.train.steps == 100);
  CHECK(c.train.batch_size == 16);  // the file's invalid 0 is replaced, so no error
  CHECK(c.optim.lr == doctest::Approx(3e-4));
  CHECK(c.eval.lengths == std::vector<int64_t>{64, 128});
  CHECK(c.device == "cpu");
  CHECK(c.seed == 7);
  CHECK(c.model.d_model == 32);
  CHECK(c.model.n_layer == 1);
  CHECK(c.model.dt_rank == 3);
  CHECK(c.run_dir == "/tmp/somewhere");
  // Defaults: run.dir from the file stem; the later override of the same key wins.
  TrainConfig d = load_config_text("", "configs/my_task.yaml", {"train.steps=5", "train.steps=6"});
  CHECK(d.run_dir == "runs/my_task");
  CHECK(d.train.steps == 6);
  CHECK(load_config_text("", "x.yaml", {"eval.lengths=512"}).eval.lengths == std::vector<int64_t>{512});
  CHECK(load_config_text("", "x.yaml", {"train.steps=1e4"}).train.steps == 10000);
}

TEST_CASE("config: bad overrides are reported like file problems") {
  std::string e = errors_of("", {"train.step=5", "optim.lr", "train.steps=[1", "modle.d_model=3"});
  CHECK(has_line(e, "train.step: unknown key", "did you mean `train.steps`?"));
  CHECK(has_line(e, "optim.lr: an override must look like key=value"));
  CHECK(has_line(e, "train.steps: cannot parse the value as YAML"));
  CHECK(has_line(e, "modle.d_model: unknown key", "did you mean `model.d_model`?"));
  CHECK(has(e, "(override `train.step=5`)"));
}

TEST_CASE("config: malformed YAML and missing files name the file") {
  std::string e = errors_of("train:\n  steps: [1, 2\n  batch_size: 3\n");
  CHECK(has(e, "test.yaml:"));
  CHECK(has(e, "malformed YAML"));
  CHECK(line_count(e) == 1);
  CHECK(has_line(errors_of("- 1\n- 2\n"), "test.yaml: expected a mapping"));

  const std::string missing = (fs::temp_directory_path() / "s6_no_such_config.yaml").string();
  try {
    load_config(missing, {});
    FAIL("expected a ConfigError");
  } catch (const ConfigError& err) {
    CHECK(has(err.what(), missing));
    CHECK(has(err.what(), "no such file"));
  }
}

TEST_CASE("config: unknown keys, with a did-you-mean for near misses") {
  std::string e = errors_of(
      "train:\n  step: 5\noptim:\n  learning_rate: 1\ntrian:\n  steps: 1\n"
      "lr: 0.1\nmodel:\n  dmodel: 3\n");
  CHECK(has_line(e, "train.step: unknown key (did you mean `train.steps`?) (test.yaml:2)"));
  CHECK(has_line(e, "optim.learning_rate: unknown key (test.yaml:4)"));  // nothing close
  CHECK(has_line(e, "trian: unknown key", "did you mean `train`?"));
  CHECK(has_line(e, "lr: unknown key", "did you mean `optim.lr`?"));
  CHECK(has_line(e, "model.dmodel: unknown key", "did you mean `model.d_model`?"));
  CHECK(line_count(e) == 5);
  CHECK(has_line(errors_of("train: 5\n"), "train: expected a mapping of train.* keys, got '5'"));
}

TEST_CASE("config: duplicate keys are errors (yaml-cpp keeps both)") {
  std::string e = errors_of(
      "train:\n  steps: 5\n  steps: 6\nmodel:\n  d_model: 8\nmodel:\n"
      "  n_layer: 1\n");
  CHECK(has_line(e, "train.steps: duplicate key (first set at test.yaml:2) (test.yaml:3)"));
  CHECK(has_line(e, "model: duplicate key"));
}

TEST_CASE("config: wrong types name the path and the expected type") {
  std::string e = errors_of(
      "train:\n  steps: abc\n  batch_size: 1.5\noptim:\n  lr: fast\nmodel:\n  conv_bias: maybe\n"
      "  dt_rank: big\neval:\n  lengths: [64, x, 128]\n  num_examples: [1]\nseed: -1\nrun:\n"
      "  dir: [a]\n");
  CHECK(has_line(e, "train.steps: expected an integer >= 1, got 'abc'"));
  CHECK(has_line(e, "train.batch_size: expected an integer >= 1, got '1.5'"));
  CHECK(has_line(e, "optim.lr: expected a number > 0, got 'fast'"));
  CHECK(has_line(e, "model.conv_bias: expected true or false, got 'maybe'"));
  CHECK(has_line(e, "model.dt_rank: expected auto or an integer >= 1, got 'big'"));
  CHECK(has_line(e, "eval.lengths[1]: expected an integer >= 1, got 'x'"));
  CHECK(has_line(e, "eval.num_examples: expected an integer >= 1, got a list"));
  CHECK(has_line(e, "seed: expected an integer in [0, 2^64)"));
  CHECK(has_line(e, "run.dir: expected a string, got a list"));
  CHECK(line_count(e) == 9);
}

TEST_CASE("config: impossible values and enums list what is allowed") {
  std::string e = errors_of(
      "", {"optim.lr=-1", "train.steps=0", "train.batch_size=0", "schedule.kind=linear", "model.layer=s5",
           "model.block=gated", "model.d_state=1000", "optim.beta2=1", "device=tpu", "task.name=sorting",
           "model.dt_init=zero", "eval.num_examples=0", "train.on_nonfinite=ignore", "model.dt_min=0"});
  CHECK(has_line(e, "optim.lr: expected a number > 0, got -1"));
  CHECK(has_line(e, "train.steps: expected an integer >= 1, got 0"));
  CHECK(has_line(e, "train.batch_size: expected an integer >= 1, got 0"));
  CHECK(has_line(e, "schedule.kind: expected one of constant, cosine, got 'linear'"));
  CHECK(has_line(e, "model.layer: expected one of s6, s4, got 's5'"));
  CHECK(has_line(e, "model.block: expected one of mamba, no_gate"));
  CHECK(has_line(e, "model.d_state: expected an integer in [1, 256], got 1000"));
  CHECK(has_line(e, "optim.beta2: expected a number in [0, 1), got 1"));
  CHECK(has_line(e, "device: expected one of auto, cpu, cuda, got 'tpu'"));
  CHECK(has_line(e, "task.name: expected one of copying, selective_copying, induction_heads"));
  CHECK(has_line(e, "model.dt_init: expected one of random, constant"));
  CHECK(has_line(e, "eval.num_examples: expected an integer >= 1, got 0"));
  CHECK(has_line(e, "train.on_nonfinite: expected one of skip, halt"));
  CHECK(has_line(e, "model.dt_min: expected a number > 0, got 0"));
  CHECK(line_count(e) == 14);  // all reported together, nothing extra from the cross checks
}

TEST_CASE("config: cross-field checks") {
  CHECK(has_line(errors_of("", {"train.batch_size=63"}, 2),
                 "train.batch_size: 63 is not divisible by the number of ranks (2)"));
  CHECK(errors_of("", {"train.batch_size=64"}, 4).empty());
  CHECK(has_line(errors_of("", {"task.name=copying", "task.seq_len=32", "task.num_tokens=16"}),
                 "task.seq_len: copying needs > 2 * task.num_tokens = 32"));
  CHECK(errors_of("", {"task.name=copying", "task.seq_len=33", "task.num_tokens=16"}).empty());
  CHECK(has_line(errors_of("", {"task.name=induction_heads", "task.seq_len=3"}),
                 "task.seq_len: induction_heads needs >= 4, got 3"));
  CHECK(has_line(errors_of("", {"model.vocab_size=8", "task.vocab_size=16"}),
                 "model.vocab_size: must be >= task.vocab_size (16), got 8"));
  CHECK(load_config_text("", "x.yaml", {"model.vocab_size=32"}).model.vocab_size == 32);
  CHECK(load_config_text("", "x.yaml", {"task.vocab_size=12"}).model.vocab_size == 12);
  const std::string lengths = errors_of("", {"task.num_tokens=16", "eval.lengths=[64, 32, 16]"});
  CHECK(has_line(lengths, "eval.lengths[1]: selective_copying needs > 2 * task.num_tokens = 32", "got 32"));
  CHECK(has_line(lengths, "eval.lengths[2]:", "got 16"));
  CHECK(line_count(lengths) == 2);
  CHECK(has_line(errors_of("", {"eval.lengths=[0]"}), "eval.lengths[0]: expected an integer >= 1"));
  CHECK(has_line(errors_of("", {"train.steps=10", "schedule.warmup_steps=11"}),
                 "schedule.warmup_steps: must be <= train.steps (10), got 11"));
  CHECK(has_line(errors_of("", {"task.loss_positions=all"}),
                 "task.loss_positions: selective_copying scores only the answer positions"));
  CHECK(errors_of("", {"task.name=induction_heads", "task.seq_len=256", "task.loss_positions=all"}).empty());
  CHECK(has_line(errors_of("", {"schedule.kind=cosine", "optim.lr=1e-4", "schedule.min_lr=1e-3"}),
                 "schedule.min_lr: must be <= optim.lr"));
  CHECK(has_line(errors_of("", {"model.dt_min=0.5", "model.dt_max=0.1"}),
                 "model.dt_max: must be >= model.dt_min (0.5), got 0.1"));
  const std::string cur = errors_of(
      "", {"task.num_tokens=16", "task.curriculum_lengths=[256, 32]", "task.curriculum_steps=[10]"});
  CHECK(has_line(cur, "task.curriculum_lengths[1]: selective_copying needs > 2 * task.num_tokens", "got 32"));
  CHECK(has_line(cur,
                 "task.curriculum_steps: expected one step count per entry of "
                 "task.curriculum_lengths (2), got 1"));
  CHECK(line_count(cur) == 2);
  CHECK(has_line(errors_of("", {"train.steps=100", "task.curriculum_lengths=[256, 512]",
                                "task.curriculum_steps=[60, 40]"}),
                 "task.curriculum_steps: the curriculum takes 100 steps, leaving none of train.steps (100)"));
  // A key that is itself wrong does not also trigger the cross checks that use it.
  CHECK(line_count(errors_of("", {"train.steps=x", "schedule.warmup_steps=5"})) == 1);
}

TEST_CASE("config: several problems from the file and overrides are reported together") {
  std::string e = errors_of("train:\n  steps: -3\n  stepz: 1\noptim:\n  lr: 0\n  lr: 1\n",
                            {"eval.every=soon", "model.d_model=0"});
  CHECK(has_line(e, "train.steps:"));
  CHECK(has_line(e, "train.stepz: unknown key"));
  CHECK(has_line(e, "optim.lr: duplicate key"));
  CHECK(has_line(e, "optim.lr: expected a number > 0, got 0"));
  CHECK(has_line(e, "eval.every: expected an integer >= 0, got 'soon'"));
  CHECK(has_line(e, "model.d_model: expected an integer >= 1, got 0"));
  CHECK(line_count(e) == 6);
}

TEST_CASE("config: to_yaml round-trips through a file") {
  TrainConfig a = load_config(
      (kConfigs / "induction_heads.yaml").string(),
      {"optim.lr=3.3e-4", "model.dt_rank=5", "model.layer=s4", "model.block=no_gate", "model.dt_init=constant",
       "model.bias=true", "model.tie_embeddings=false", "schedule.kind=cosine", "schedule.min_lr=1.7e-5",
       "train.max_minutes=9.5", "seed=18446744073709551615", "run.dir='runs/a b: \"c\"'", "init.from=\"null\"",
       "train.precision=bf16", "model.vocab_size=24", "task.curriculum_lengths=[256, 1024]",
       "task.curriculum_steps=[30, 40]"});
  const std::string text = to_yaml(a);
  const fs::path p = temp_file("s6_config_roundtrip.yaml", text);
  TrainConfig b = load_config(p.string(), {});
  fs::remove(p);
  CHECK(to_yaml(b) == text);
  CHECK(b.run_dir == "runs/a b: \"c\"");  // kept, not re-defaulted from the temp file's stem
  CHECK(b.init_from == "null");
  CHECK(b.seed == 18446744073709551615ull);
  CHECK(b.optim.lr == a.optim.lr);
  CHECK(b.schedule.min_lr == a.schedule.min_lr);
  CHECK(b.model.dt_rank == 5);
  CHECK(b.model.layer == LayerKind::S4);
  CHECK(b.model.block == BlockKind::NoGate);
  CHECK(!b.model.dt_init_random);
  CHECK(b.model.vocab_size == 24);
  CHECK(b.eval.lengths == a.eval.lengths);
  CHECK(b.task.curriculum_lengths == std::vector<int64_t>{256, 1024});
  CHECK(b.task.curriculum_steps == std::vector<int64_t>{30, 40});
  // Every schema key is written: the defaults round-trip too.
  TrainConfig d = load_config_text("", "x.yaml", {});
  CHECK(to_yaml(load_config_text(to_yaml(d), "y.yaml", {})) == to_yaml(d));
  CHECK(has(to_yaml(d), "  dt_rank: auto\n"));
  CHECK(has(to_yaml(d), "  lengths: []\n"));
}

TEST_CASE("config: training_length follows the curriculum phases, then task.seq_len") {
  TrainConfig c = load_config_text(
      "", "x.yaml", {"train.steps=100", "task.curriculum_lengths=[256, 1024]", "task.curriculum_steps=[3, 5]"});
  const std::vector<int64_t> expected{256, 256, 256, 1024, 1024, 1024, 1024, 1024, 4096, 4096};
  for (int64_t step = 0; step < 10; ++step) CHECK(training_length(c, step) == expected[step]);
  CHECK(training_length(load_config_text("", "x.yaml", {}), 0) == 4096);
}

TEST_CASE("config: model_shape_keys are model keys the schema knows") {
  const std::vector<std::string> keys = model_shape_keys();
  CHECK(keys.size() == 13);
  const std::string yaml = to_yaml(TrainConfig{});
  for (const std::string& k : keys) {
    CAPTURE(k);
    REQUIRE(k.rfind("model.", 0) == 0);
    CHECK(has(yaml, "\n  " + k.substr(6) + ": "));
  }
  CHECK(std::find(keys.begin(), keys.end(), "model.dt_min") == keys.end());  // init only
}

TEST_CASE("config: dist.bucket_mb is 25 MB unless set, and must be a positive number") {
  CHECK(load_config_text("", "x.yaml", {}).dist.bucket_mb == 25.0);
  CHECK(has(to_yaml(TrainConfig{}), "dist:\n  bucket_mb: 25.0\n"));
  CHECK(load_config_text("dist:\n  bucket_mb: 0.05\n", "x.yaml", {}).dist.bucket_mb == 0.05);
  for (const char* bad : {"dist.bucket_mb=0", "dist.bucket_mb=-1", "dist.bucket_mb=lots"})
    CHECK(has_line(errors_of("", {bad}), "dist.bucket_mb: expected a number > 0"));
}

TEST_CASE("config: written floats are floats to YAML 1.1 readers too (1.0e-05, not 1e-05)") {
  TrainConfig c = load_config_text("task:\n  name: copying\n", "floats.yaml",
                                   {"optim.eps=1e-8", "model.norm_eps=1e-5", "model.dt_scale=1",
                                    "optim.lr=2e-3", "schedule.min_lr=1e+2", "model.dt_max=0.25"});
  const std::string text = to_yaml(c);
  CHECK(text.find("  eps: 1.0e-08\n") != std::string::npos);
  CHECK(text.find("  norm_eps: 1.0e-05\n") != std::string::npos);
  CHECK(text.find("  dt_scale: 1.0\n") != std::string::npos);
  CHECK(text.find("  lr: 0.002\n") != std::string::npos);
  CHECK(text.find("  min_lr: 100.0\n") != std::string::npos);
  CHECK(to_yaml(load_config_text(text, "floats.yaml", {})) == text);
  // PyYAML (YAML 1.1) where python3 has it: every float key must come back as a number.
  if (std::system("python3 -c 'import yaml' >/dev/null 2>&1") != 0) {
    MESSAGE("python3 yaml is not installed: the PyYAML reading check is skipped");
    return;
  }
  const fs::path file = temp_file("s6_config_floats.yaml", text);
  const std::string check =
      "python3 -c \"import sys, yaml; d = yaml.safe_load(open(sys.argv[1])); "
      "bad = [f'{s}.{k}={v!r}' for s in d if isinstance(d[s], dict) for k, v in d[s].items() if isinstance(v, "
      "str) "
      "and v[:1].isdigit()]; print(bad); sys.exit(1 if bad or d['optim']['eps'] != 1e-08 else 0)\" " +
      file.string();
  CHECK(std::system(check.c_str()) == 0);
  fs::remove(file);
}
