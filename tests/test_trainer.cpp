// The trainer end to end on the CPU: a short run learns; checkpoints round-trip, detect
// corruption, refuse a different model shape; resume continues bit for bit, also after SIGTERM,
// SIGKILL and a kill in the middle of a checkpoint write.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "core/cuda_runtime.h"
#include "tests/train_helpers.h"
#include "trainer/checkpoint.h"
#include "trainer/config.h"
#include "trainer/configured_task.h"
#include "trainer/exit_codes.h"
#include "trainer/resume.h"
#include "trainer/train_step.h"
#include "trainer/trainer.h"

using namespace s6;
using namespace s6::trainer;
using namespace s6::testing;
namespace fs = std::filesystem;

TEST_CASE("trainer: a short CPU run learns copying far below chance") {
  fs::path dir = fresh_dir("learn");
  TrainConfig c = tiny_config(dir, 300);
  c.checkpoint.every = 0;
  REQUIRE(run_training(c, RunOptions{}) == kExitOk);
  auto losses = train_losses(dir);
  REQUIRE(losses.size() == 300);
  double chance = std::log(6.0);  // data tokens are uniform over vocab - 2 = 6 ids
  double last = std::stod(losses.back().substr(losses.back().find(':') + 1));
  MESSAGE("copying loss after 300 steps: ", last, " (chance ", chance, ")");
  CHECK(last < 0.25 * chance);
  fs::remove_all(dir);
}

TEST_CASE("trainer: bf16 mixed precision on the CPU learns copying too, and resumes bit for bit") {
  fs::path dir = fresh_dir("learn_bf16");
  TrainConfig c = tiny_config(dir, 300);
  c.checkpoint.every = 0;
  c.train.precision = "bf16";
  REQUIRE(run_training(c, RunOptions{}) == kExitOk);
  auto losses = train_losses(dir);
  REQUIRE(losses.size() == 300);
  double chance = std::log(6.0);
  double last = std::stod(losses.back().substr(losses.back().find(':') + 1));
  MESSAGE("bf16 copying loss after 300 steps: ", last, " (chance ", chance, ")");
  CHECK(last < 0.25 * chance);
  fs::remove_all(dir);

  fs::path straight = fresh_dir("bf16_straight"), split = fresh_dir("bf16_split");
  auto cfg = [](const fs::path& d, int64_t steps) {
    TrainConfig t = tiny_config(d, steps);
    t.train.precision = "bf16";
    return t;
  };
  REQUIRE(run_training(cfg(straight, 20), RunOptions{}) == kExitOk);
  REQUIRE(run_training(cfg(split, 10), RunOptions{}) == kExitOk);
  REQUIRE(run_training(cfg(split, 20), RunOptions{}) == kExitOk);
  CHECK(train_losses(straight) == train_losses(split));
  check_identical(final_checkpoint(straight), final_checkpoint(split));
  fs::remove_all(straight);
  fs::remove_all(split);
}

TEST_CASE("trainer: stop at N/2 and resume gives bit-identical losses, weights and optimizer state") {
  fs::path straight = fresh_dir("straight"), split = fresh_dir("split");
  REQUIRE(run_training(tiny_config(straight, 20), RunOptions{}) == kExitOk);
  REQUIRE(run_training(tiny_config(split, 10), RunOptions{}) == kExitOk);
  REQUIRE(run_training(tiny_config(split, 20), RunOptions{}) == kExitOk);  // resume auto
  CHECK(train_losses(straight) == train_losses(split));
  check_identical(final_checkpoint(straight), final_checkpoint(split));
  fs::remove_all(straight);
  fs::remove_all(split);
}

TEST_CASE("trainer: a length curriculum trains each phase at its length and resumes bit for bit mid-phase") {
  fs::path straight = fresh_dir("cur_straight"), split = fresh_dir("cur_split");
  auto cfg = [](const fs::path& dir, int64_t steps) {
    TrainConfig c = tiny_config(dir, steps);
    c.task.curriculum_lengths = {10, 12};
    c.task.curriculum_steps = {4, 8};  // steps 1-4 at 10, 5-12 at 12, then 16
    c.train.log_every = 1;
    return c;
  };
  REQUIRE(run_training(cfg(straight, 20), RunOptions{}) == kExitOk);
  REQUIRE(run_training(cfg(split, 10), RunOptions{}) == kExitOk);  // stops inside the second phase
  REQUIRE(run_training(cfg(split, 20), RunOptions{}) == kExitOk);
  CHECK(train_losses(straight) == train_losses(split));
  check_identical(final_checkpoint(straight), final_checkpoint(split));
  // tokens_per_s / (1000 / ms) = batch x length: the length each step trained at.
  std::ifstream in(straight / "metrics.jsonl");
  static const std::regex re(R"re("step": (\d+),.*"ms": ([^,]+), "tokens_per_s": ([^,}]+))re");
  int checked = 0;
  for (std::string line; std::getline(in, line);) {
    std::smatch m;
    if (!std::regex_search(line, m, re)) continue;
    const int64_t step = std::stoll(m[1].str());
    const double tokens = std::stod(m[3].str()) * std::stod(m[2].str()) / 1e3;
    CAPTURE(step);
    CHECK(tokens == doctest::Approx(16.0 * (step <= 4 ? 10 : step <= 12 ? 12 : 16)).epsilon(1e-4));
    ++checked;
  }
  CHECK(checked == 20);
  fs::remove_all(straight);
  fs::remove_all(split);
}

TEST_CASE("checkpoint: truncated files and flipped bytes are detected by name") {
  fs::path dir = fresh_dir("corrupt");
  REQUIRE(run_training(tiny_config(dir, 5), RunOptions{}) == kExitOk);
  std::string good = final_checkpoint(dir);
  CHECK_NOTHROW(read_checkpoint(good));
  std::string truncated = (dir / "truncated.h5").string();
  fs::copy_file(good, truncated);
  fs::resize_file(truncated, fs::file_size(truncated) / 2);
  CHECK_THROWS_WITH_AS(read_checkpoint(truncated), doctest::Contains("truncated.h5"), CheckpointError);

  // Flip one byte inside the raw data of a dataset: its checksum must name it.
  CheckpointContents c = read_checkpoint(good);
  std::vector<float> emb = c.model.at("backbone.embedding.weight").to_vector<float>();
  std::string bytes;
  {
    std::ifstream in(good, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  std::string needle(reinterpret_cast<const char*>(emb.data()), 64);
  size_t at = bytes.find(needle);
  REQUIRE(at != std::string::npos);
  bytes[at + 17] ^= 0x10;
  std::string flipped = (dir / "flipped.h5").string();
  std::ofstream(flipped, std::ios::binary) << bytes;
  CHECK_THROWS_WITH_AS(read_checkpoint(flipped),
                       doctest::Contains("/model/backbone.embedding.weight fails its checksum"),
                       CheckpointError);
  fs::remove_all(dir);
}

TEST_CASE("trainer: init.from starts a new run from a checkpoint's weights with a fresh optimizer") {
  fs::path source = fresh_dir("init_src"), target = fresh_dir("init_dst"), fresh = fresh_dir("init_fresh");
  TrainConfig c = tiny_config(source, 300);  // learns copying (see the first test)
  c.checkpoint.every = 0;
  REQUIRE(run_training(c, RunOptions{}) == kExitOk);
  TrainConfig fine = tiny_config(target, 1);
  fine.init_from = final_checkpoint(source);
  REQUIRE(run_training(fine, RunOptions{}) == kExitOk);
  REQUIRE(run_training(tiny_config(fresh, 1), RunOptions{}) == kExitOk);
  auto loss_of = [](const fs::path& d) {
    std::string l = train_losses(d).front();
    return std::stod(l.substr(l.find(':') + 1));
  };
  CHECK(loss_of(target) < 0.5 * loss_of(fresh));  // it starts from the trained weights
  CHECK(read_checkpoint(final_checkpoint(target)).meta.optimizer_step == 1);  // fresh AdamW
  TrainConfig other = tiny_config(fresh_dir("init_bad"), 1);
  other.model.n_layer = 3;
  other.init_from = final_checkpoint(source);
  CHECK_THROWS_WITH_AS(run_training(other, RunOptions{}), doctest::Contains("model.n_layer"), ConfigError);
  for (const auto& d : {source, target, fresh}) fs::remove_all(d);
  fs::remove_all(other.run_dir);
}

TEST_CASE("checkpoint: under --resume auto a corrupt newest checkpoint is skipped for the previous one") {
  fs::path straight = fresh_dir("auto_straight"), dir = fresh_dir("auto_corrupt");
  REQUIRE(run_training(tiny_config(straight, 20), RunOptions{}) == kExitOk);
  REQUIRE(run_training(tiny_config(dir, 10), RunOptions{}) == kExitOk);  // checkpoints at 5 and 10
  std::string newest = final_checkpoint(dir);
  fs::resize_file(newest, fs::file_size(newest) / 3);                    // truncated: must not be used
  REQUIRE(run_training(tiny_config(dir, 20), RunOptions{}) == kExitOk);  // resumes from step 5
  CHECK(train_losses(dir) == train_losses(straight));
  check_identical(final_checkpoint(straight), final_checkpoint(dir));
  fs::remove_all(straight);
  fs::remove_all(dir);
}

TEST_CASE("checkpoint: pruning keeps the newest K and every M-th step") {
  fs::path dir = fresh_dir("prune");
  for (int64_t step : {5, 10, 15, 20, 25, 30}) std::ofstream(dir / checkpoint_name(step)) << "x";
  std::ofstream(dir / ".step_00000035.h5.tmp") << "half";
  CHECK(remove_stale_temp_files(dir.string()) == 1);
  prune_checkpoints(dir.string(), 2, 10);
  std::vector<int64_t> left;
  for (const auto& [step, path] : list_checkpoints(dir.string())) left.push_back(step);
  CHECK(left == std::vector<int64_t>{10, 20, 25, 30});
  fs::remove_all(dir);
}

TEST_CASE("checkpoint: resuming into a different model shape is refused naming the key") {
  fs::path dir = fresh_dir("shape");
  REQUIRE(run_training(tiny_config(dir, 5), RunOptions{}) == kExitOk);
  TrainConfig wider = tiny_config(dir, 10);
  wider.model.d_model = 48;
  CHECK_THROWS_WITH_AS(run_training(wider, RunOptions{}), doctest::Contains("model.d_model"), ConfigError);
  RunOptions explicit_path;
  explicit_path.resume = (dir / "checkpoints" / "missing.h5").string();
  CHECK_THROWS_AS(run_training(tiny_config(dir, 10), explicit_path), CheckpointError);
  fs::remove_all(dir);
}

TEST_CASE(
    "train step: a finite step updates once, a non-finite one updates nothing, neither leaves gradients") {
  const TrainConfig c = tiny_config("", 5);
  MambaLM model(c.model, c.seed, DType::Float32, Device::CPU);
  AdamW optimizer(model.parameters(), c.optim);
  const std::unique_ptr<data::Task> task = make_configured_task(c, c.task.seq_len);
  TrainStep step(model, optimizer, c, {task.get(), 4, c.seed, 0});
  auto snapshot = [&] {
    std::vector<std::vector<float>> out;
    for (const NamedParameter& p : model.parameters()) out.push_back(p.tensor.detach().to_vector<float>());
    for (const Tensor& m : optimizer.exp_avg()) out.push_back(m.to_vector<float>());
    return out;
  };
  auto no_gradients = [&] {
    for (const NamedParameter& p : model.parameters())
      if (p.tensor.grad().defined()) return false;
    return true;
  };
  const auto before = snapshot();
  StepResult r = step.run(0, 1e-3);
  CHECK(!r.skipped);
  CHECK(std::isfinite(r.loss));
  CHECK(r.norm.norm > 0);
  CHECK(optimizer.step_count() == 1);
  CHECK(snapshot() != before);
  CHECK(no_gradients());
  const data::Accuracy acc = step.accuracy();
  CHECK(acc.total > 0);
  // A NaN in the final norm's weight makes every logit, and so the loss, NaN.
  for (NamedParameter& p : model.parameters())
    if (p.name == "backbone.norm_f.weight") p.tensor.data<float>()[0] = std::nanf("");
  const auto poisoned = snapshot();
  r = step.run(1, 1e-3);
  CHECK(r.skipped);
  CHECK(!std::isfinite(r.loss));
  CHECK(optimizer.step_count() == 1);
  const auto after = snapshot();
  CHECK(after.size() == poisoned.size());
  for (size_t i = 0; i < after.size(); ++i)  // bitwise (NaN included): memcmp, not ==
    CHECK(std::memcmp(after[i].data(), poisoned[i].data(), after[i].size() * sizeof(float)) == 0);
  CHECK(no_gradients());
}

TEST_CASE("checkpoint: the model-shape values are the config's YAML text, as older checkpoints stored them") {
  TrainConfig c;
  c.model.d_model = 48;
  c.model.layer = LayerKind::S4;
  c.model.block = BlockKind::NoGate;
  c.model.bias = true;
  const std::map<std::string, std::string> expected{{"model.d_model", "48"},
                                                    {"model.n_layer", "2"},
                                                    {"model.vocab_size", "16"},
                                                    {"model.d_state", "16"},
                                                    {"model.d_conv", "4"},
                                                    {"model.expand", "2"},
                                                    {"model.dt_rank", "auto"},
                                                    {"model.conv_bias", "true"},
                                                    {"model.bias", "true"},
                                                    {"model.pad_vocab_size_multiple", "8"},
                                                    {"model.tie_embeddings", "true"},
                                                    {"model.layer", "s4"},
                                                    {"model.block", "no_gate"}};
  CHECK(model_shape_of(c) == expected);
  c.model.dt_rank = 7;
  CHECK(model_shape_of(c).at("model.dt_rank") == "7");
}

namespace {

// The uninterrupted reference run the process tests compare against.
TrainConfig process_config(const fs::path& dir) {
  TrainConfig c = tiny_config(dir, 30);
  c.task.seq_len = 32;
  return c;
}

struct Reference {
  fs::path dir;
  std::vector<std::string> losses;
  Reference() : dir(fresh_dir("p_straight")) {
    REQUIRE(run_training(process_config(dir), RunOptions{}) == kExitOk);
    losses = train_losses(dir);
    REQUIRE(losses.size() == 30);
  }
  ~Reference() { fs::remove_all(dir); }
};

// Runs train in a child process with S6_FAULT_INJECT set (or unset when fault is empty).
int run_child(const fs::path& cfg, const std::string& fault, const std::vector<std::string>& extra = {}) {
  if (fault.empty()) unsetenv("S6_FAULT_INJECT");
  else setenv("S6_FAULT_INJECT", fault.c_str(), 1);
  int code = wait_exit(spawn_train(cfg, extra));
  unsetenv("S6_FAULT_INJECT");
  return code;
}

fs::path prepared_run(const std::string& name) {
  fs::path dir = fresh_dir(name);
  write_yaml(dir / "cfg.yaml", process_config(dir));
  return dir;
}

}  // namespace

TEST_CASE("trainer: SIGTERM saves a checkpoint at the step boundary, exits 5, and resume is bit-exact") {
  Reference ref;
  fs::path dir = prepared_run("p_term");
  CHECK(run_child(dir / "cfg.yaml", "sigterm_at_step=12") == kExitInterrupted);
  auto saved = list_checkpoints((dir / "checkpoints").string());
  REQUIRE(!saved.empty());
  CHECK(saved.back().first == 12);  // saved at the boundary, between the every-5 checkpoints
  CHECK(run_child(dir / "cfg.yaml", "") == kExitOk);
  CHECK(train_losses(dir) == ref.losses);
  check_identical(final_checkpoint(ref.dir), final_checkpoint(dir));
  fs::remove_all(dir);
}

TEST_CASE("trainer: SIGKILL between checkpoints, then resume, is bit-exact with no duplicate metrics") {
  Reference ref;
  fs::path dir = prepared_run("p_kill");
  CHECK(run_child(dir / "cfg.yaml", "sigkill_at_step=13") == 128 + SIGKILL);
  CHECK(list_checkpoints((dir / "checkpoints").string()).back().first == 10);
  CHECK(run_child(dir / "cfg.yaml", "") == kExitOk);
  CHECK(train_losses(dir) == ref.losses);  // lines 11..13 were dropped on resume, then rewritten
  check_identical(final_checkpoint(ref.dir), final_checkpoint(dir));
  fs::remove_all(dir);
}

TEST_CASE("trainer: a kill in the middle of a checkpoint write leaves the previous one, which resume picks") {
  Reference ref;
  fs::path dir = prepared_run("p_fault");
  CHECK(run_child(dir / "cfg.yaml", "", {"train.steps=5"}) == kExitOk);
  CHECK(run_child(dir / "cfg.yaml", "kill_during_checkpoint", {"train.steps=10"}) == 128 + SIGKILL);
  auto left = list_checkpoints((dir / "checkpoints").string());
  REQUIRE(left.size() == 1);
  CHECK(left.back().first == 5);
  bool temp_left = false;
  for (const auto& e : fs::directory_iterator(dir / "checkpoints")) temp_left |= e.path().extension() == ".tmp";
  CHECK(temp_left);  // the half-written file is there until the next start removes it
  CHECK(run_child(dir / "cfg.yaml", "") == kExitOk);
  CHECK(train_losses(dir) == ref.losses);
  check_identical(final_checkpoint(ref.dir), final_checkpoint(dir));
  fs::remove_all(dir);
}

namespace {
int count_lines_with(const fs::path& run_dir, const std::string& needle) {
  std::ifstream in(run_dir / "metrics.jsonl");
  int n = 0;
  for (std::string line; std::getline(in, line);) n += line.find(needle) != std::string::npos;
  return n;
}
}  // namespace

namespace {
// Trains 20 steps eagerly, and 10 + 10 (a resume, which captures anew) with the CUDA graph, from
// `base` (device cuda); losses, weights and both moments must be bitwise equal.
void check_graph_matches_eager_across_resume(const std::string& name, TrainConfig base) {
  fs::path eager = fresh_dir(name + "_eager"), graph = fresh_dir(name + "_graph");
  auto cfg = [&](const fs::path& dir, int64_t steps, const char* mode) {
    TrainConfig c = base;
    c.run_dir = dir.string();
    c.train.steps = steps;
    c.train.cuda_graph = mode;
    return c;
  };
  REQUIRE(run_training(cfg(eager, 20, "off"), RunOptions{}) == kExitOk);
  REQUIRE(run_training(cfg(graph, 10, "on"), RunOptions{}) == kExitOk);
  REQUIRE(run_training(cfg(graph, 20, "on"), RunOptions{}) == kExitOk);  // resume auto
  CHECK(train_losses(eager).size() == 20);
  CHECK(train_losses(eager) == train_losses(graph));
  check_identical(final_checkpoint(eager), final_checkpoint(graph));
  fs::remove_all(eager);
  fs::remove_all(graph);
}
}  // namespace

TEST_CASE("trainer (cuda): the captured CUDA-graph step is bitwise the eager step, across a resume") {
  if (!cuda::available()) {
    MESSAGE("SKIPPED: no CUDA device on this machine");
    return;
  }
  TrainConfig c = tiny_config("", 20);
  c.device = "cuda";
  c.optim.weight_decay = 0.1;    // both parameter groups take part
  c.schedule.kind = "constant";  // (cosine would depend on train.steps, which the resume changes)
  c.schedule.warmup_steps = 6;   // the learning rate changes across the first replays
  check_graph_matches_eager_across_resume("graph", c);
}

TEST_CASE(
    "trainer (cuda): under bf16 mixed precision the captured step is bitwise the eager step, across a resume") {
  if (!cuda::available()) {
    MESSAGE("SKIPPED: no CUDA device on this machine");
    return;
  }
  TrainConfig c = tiny_config("", 20);
  c.device = "cuda";
  c.train.precision = "bf16";
  c.optim.weight_decay = 0.1;
  c.schedule.kind = "constant";
  check_graph_matches_eager_across_resume("graph_bf16", c);
}

TEST_CASE(
    "trainer (cuda): under a length curriculum the graph is captured again per phase, bitwise the eager step") {
  if (!cuda::available()) {
    MESSAGE("SKIPPED: no CUDA device on this machine");
    return;
  }
  TrainConfig c = tiny_config("", 20);
  c.device = "cuda";
  c.task.curriculum_lengths = {10, 12};
  c.task.curriculum_steps = {4, 8};  // the resume at step 10 falls inside the second phase
  check_graph_matches_eager_across_resume("cur_graph", c);
}

TEST_CASE("trainer (cuda): a non-finite step is skipped on the device exactly as the eager loop skips it") {
  if (!cuda::available()) {
    MESSAGE("SKIPPED: no CUDA device on this machine");
    return;
  }
  fs::path eager = fresh_dir("nan_eager"), graph = fresh_dir("nan_graph");
  auto cfg = [](const fs::path& dir, const char* mode) {
    TrainConfig c = tiny_config(dir, 8);
    c.device = "cuda";
    c.train.cuda_graph = mode;
    c.optim.lr = 1e30;  // the weights overflow within a few steps
    c.optim.grad_clip = 0;
    c.train.max_consecutive_skips = 100;
    c.train.max_weight_abs = 0;  // the blown-up state is the point here: let the run save it
    return c;
  };
  REQUIRE(run_training(cfg(eager, "off"), RunOptions{}) == kExitOk);
  REQUIRE(run_training(cfg(graph, "on"), RunOptions{}) == kExitOk);
  const int skips = count_lines_with(eager, "skip_nonfinite");
  CHECK(skips > 0);
  CHECK(count_lines_with(graph, "skip_nonfinite") == skips);
  CHECK(train_losses(eager) == train_losses(graph));
  fs::remove_all(eager);
  fs::remove_all(graph);
}
