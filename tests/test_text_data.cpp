// The tokens and bytes tasks: globs, llm.c and raw shards, windows across files, splits, seeded
// positions, data errors by name, and training on them (evaluation figures, bit-exact resume).
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <regex>
#include <set>

#include "core/cuda_runtime.h"
#include "data/text_task.h"
#include "tests/train_helpers.h"
#include "trainer/configured_task.h"
#include "trainer/evaluate.h"
#include "trainer/exit_codes.h"
#include "trainer/trainer.h"

using namespace s6;
using namespace s6::data;
using namespace s6::testing;
namespace fs = std::filesystem;

namespace {

// An llm.c shard (version 1, uint16) of the tokens first .. first + count - 1 (mod 65536).
void write_llmc(const fs::path& p, int32_t first, int32_t count, int32_t magic = kLlmcMagic,
                int32_t version = 1) {
  int32_t header[256] = {};
  header[0] = magic;
  header[1] = version;
  header[2] = count;
  std::ofstream out(p, std::ios::binary);
  out.write(reinterpret_cast<const char*>(header), sizeof(header));
  for (int32_t i = 0; i < count; ++i) {
    const uint16_t t = static_cast<uint16_t>(first + i);
    out.write(reinterpret_cast<const char*>(&t), 2);
  }
}

template <typename T> void write_raw(const fs::path& p, int32_t first, int32_t count) {
  std::ofstream out(p, std::ios::binary);
  for (int32_t i = 0; i < count; ++i) {
    const T t = static_cast<T>(first + i);
    out.write(reinterpret_cast<const char*>(&t), sizeof(T));
  }
}

TaskParams params(int64_t vocab, int64_t seq_len) {
  TaskParams p;
  p.vocab = vocab;
  p.seq_len = seq_len;
  p.loss_positions = LossPositions::All;
  return p;
}

// Every example is a window of consecutive tokens: inputs[t + 1] == inputs[t] + 1, targets shifted
// by one; returns each window's first token.
std::vector<int32_t> check_windows(const Batch& b) {
  const int64_t B = b.batch_size(), L = b.length();
  std::vector<int32_t> in = b.inputs.to_vector<int32_t>(), tgt = b.targets.to_vector<int32_t>(), starts;
  for (int64_t e = 0; e < B; ++e) {
    for (int64_t t = 0; t < L; ++t) {
      CHECK(tgt[e * L + t] == in[e * L + t] + 1);
      if (t + 1 < L) CHECK(in[e * L + t + 1] == in[e * L + t] + 1);
    }
    starts.push_back(in[e * L]);
  }
  return starts;
}

std::string data_error(const std::string& name, const TaskParams& p, const TextDataParams& d) {
  try {
    make_text_task(name, p, d);
  } catch (const DataError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("text data: '**' globs match any depth, sorted, skipping hidden directories") {
  fs::path dir = fresh_dir("glob");
  fs::create_directories(dir / "a/b/c");
  fs::create_directories(dir / ".hidden");
  for (const char* f : {"top.py", "a/one.py", "a/b/c/two.py", "a/b/skip.txt", ".hidden/no.py"})
    std::ofstream(dir / f) << "x";
  std::vector<std::string> got = expand_glob((dir / "**/*.py").string());
  std::vector<std::string> want = {(dir / "a/b/c/two.py").string(), (dir / "a/one.py").string(),
                                   (dir / "top.py").string()};
  CHECK(got == want);
  CHECK(expand_glob((dir / "a/*.py").string()) == std::vector<std::string>{(dir / "a/one.py").string()});
  CHECK(expand_glob((dir / "nothing/**/*.py").string()).empty());
  fs::remove_all(dir);
}

TEST_CASE("text data: llm.c shards are one stream, windows cross files, validation reads its own files") {
  fs::path dir = fresh_dir("llmc");
  write_llmc(dir / "train_000.bin", 0, 100);
  write_llmc(dir / "train_001.bin", 100, 50);  // continues the stream across the file boundary
  write_llmc(dir / "val_000.bin", 1000, 60);
  TextDataParams d{(dir / "train_*.bin").string(), (dir / "val_*.bin").string(), 0, "llmc", "uint16"};
  auto task = make_text_task("tokens", params(2000, 16), d);
  CHECK_FALSE(task->samples_on_device());
  std::set<int32_t> starts;
  for (uint64_t k = 0; k < 20; ++k)
    for (int32_t s : check_windows(task->sample(8, 7, k))) {
      CHECK(s >= 0);
      CHECK(s + 16 < 150);  // the window's last target is inside the stream
      starts.insert(s);
    }
  CHECK(*starts.rbegin() > 84);  // some windows run across the boundary at 100 (start in 85..133)
  for (int32_t s : check_windows(task->sample(8, 7, 0, 0, Split::Validation))) {
    CHECK(s >= 1000);
    CHECK(s + 16 < 1060);
  }
  // A pure function of (seed, step, example): rank 1's batch is examples 4..7 of the global batch.
  Batch all = task->sample(8, 7, 3), rank1 = task->sample(4, 7, 3, 1);
  CHECK(rank1.inputs.to_vector<int32_t>() == all.inputs.narrow(0, 4, 4).contiguous().to_vector<int32_t>());
  CHECK(task->sample(8, 7, 3).inputs.to_vector<int32_t>() == all.inputs.to_vector<int32_t>());
  CHECK(task->sample(8, 8, 3).inputs.to_vector<int32_t>() != all.inputs.to_vector<int32_t>());
  fs::remove_all(dir);
}

TEST_CASE("text data: raw uint16 and uint32 files, and a held-out tail that training never reads") {
  fs::path dir = fresh_dir("raw");
  write_raw<uint16_t>(dir / "a.u16", 60000, 3000);  // ids above 32767: read unsigned
  write_raw<uint32_t>(dir / "b.u32", 70000, 1000);
  auto t16 = make_text_task("tokens", params(65536, 8), {(dir / "a.u16").string(), "", 0.5, "raw", "uint16"});
  for (int32_t s : check_windows(t16->sample(4, 1, 0))) CHECK(s < 61500 - 8);  // the first half is training's
  TextDataParams d32{(dir / "b.u32").string(), "", 0.25, "raw", "uint32"};
  auto t32 = make_text_task("tokens", params(80000, 8), d32);
  for (uint64_t k = 0; k < 10; ++k) {
    for (int32_t s : check_windows(t32->sample(8, 1, k))) CHECK(s + 8 < 70750);
    for (int32_t s : check_windows(t32->sample(8, 1, k, 0, Split::Validation))) CHECK(s >= 70750);
  }
  fs::remove_all(dir);
}

TEST_CASE("text data: bytes reads any files as bytes and skips empty ones") {
  fs::path dir = fresh_dir("bytes");
  std::ofstream(dir / "a.txt") << "abcdefghijklmnopqrstuvwxyz";
  std::ofstream(dir / "b.txt") << "";
  std::ofstream(dir / "c.txt") << "0123456789";
  auto task = make_text_task("bytes", params(256, 4), {(dir / "*.txt").string(), "", 0.2, "llmc", "uint16"});
  auto* text = dynamic_cast<TextTask*>(task.get());
  REQUIRE(text);
  CHECK(text->stream_tokens(Split::Validation) == 7);  // 20% of 36 bytes: "3456789"
  CHECK(text->stream_tokens(Split::Train) == 29);
  Batch v = task->sample(2, 1, 0, 0, Split::Validation);
  const std::string tail = "3456789";
  for (int32_t t : v.inputs.to_vector<int32_t>()) CHECK(tail.find(static_cast<char>(t)) != std::string::npos);
  fs::remove_all(dir);
}

TEST_CASE("text data: unusable data is a data error naming the glob or the file") {
  fs::path dir = fresh_dir("bad");
  write_llmc(dir / "good.bin", 0, 100);
  write_llmc(dir / "magic.bin", 0, 100, 1234);
  write_llmc(dir / "empty.bin", 0, 0);
  write_llmc(dir / "short.bin", 0, 10);
  std::ofstream(dir / "zero.bin") << "";
  {
    std::ofstream trunc(dir / "trunc.bin", std::ios::binary);
    std::ifstream src(dir / "good.bin", std::ios::binary);
    std::string all((std::istreambuf_iterator<char>(src)), {});
    trunc << all.substr(0, all.size() - 7);
  }
  const TaskParams p = params(200, 16);
  auto err = [&](const std::string& train, const std::string& val = "", double frac = 0.5) {
    return data_error(
        "tokens", p, {(dir / train).string(), val.empty() ? "" : (dir / val).string(), frac, "llmc", "uint16"});
  };
  CHECK(err("nothing_*.bin")
            .find("data.train_glob = '" + (dir / "nothing_*.bin").string() + "' matches no file") !=
        std::string::npos);
  CHECK(err("magic.bin").find("magic.bin is not an llm.c token shard (magic 1234") != std::string::npos);
  CHECK(err("empty.bin").find("empty.bin is an empty shard") != std::string::npos);
  CHECK(err("zero.bin").find("zero.bin is empty") != std::string::npos);
  CHECK(err("trunc.bin").find("trunc.bin has 1217 bytes but its header promises 100 tokens") !=
        std::string::npos);
  CHECK(err("good.bin", "short.bin")
            .find("data.val_glob = '" + (dir / "short.bin").string() +
                  "' holds 10 tokens, fewer than one window of task.seq_len + 1 = 17") != std::string::npos);
  const std::string held = err("good.bin", "", 0.1);
  CHECK(held.find("the held-out data.val_fraction = 0.1 of data.train_glob = '") != std::string::npos);
  CHECK(held.find("' holds 10 tokens") != std::string::npos);
  CHECK(err("good.bin", "", 0).find("data.val_fraction = 0: expected a fraction in (0, 1)") !=
        std::string::npos);
  CHECK(data_error("tokens", params(50, 16), {(dir / "good.bin").string(), "", 0.5, "llmc", "uint16"})
            .find("token 50 at position 50 is outside task.vocab_size = 50") != std::string::npos);
  CHECK(err("good.bin", "good.bin").empty());
  // Through the trainer: a configuration error, exit code 2.
  trainer::TrainConfig c = tiny_config(dir / "run", 2);
  c.task.name = "tokens";
  c.task.vocab_size = 200;
  c.model.vocab_size = 200;
  c.task.loss_positions = "all";
  c.data.train_glob = (dir / "missing_*.bin").string();
  c.data.val_fraction = 0.5;
  CHECK_THROWS_AS(trainer::make_configured_task(c, 16), trainer::ConfigError);
  fs::remove_all(dir);
}

TEST_CASE("text data: config keys, defaults and cross checks") {
  using trainer::load_config_text;
  trainer::TrainConfig c = load_config_text(
      "task:\n  name: bytes\n  vocab_size: 256\ndata:\n  train_glob: x/*.py\n"
      "  val_fraction: 0.1\n",
      "t.yaml", {});
  CHECK(c.task.loss_positions == "all");
  CHECK(c.data.format == "llmc");
  CHECK(trainer::load_config_text(trainer::to_yaml(c), "again.yaml", {}).data.train_glob == "x/*.py");
  auto errors = [](const std::string& text) {
    try {
      load_config_text(text, "t.yaml", {});
    } catch (const trainer::ConfigError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  CHECK(errors("task:\n  name: tokens\n  vocab_size: 50280\n")
            .find("data.train_glob: task.name = tokens reads files") != std::string::npos);
  CHECK(errors("task:\n  name: tokens\ndata:\n  train_glob: a\n")
            .find("data.val_glob: expected a glob of validation files") != std::string::npos);
  CHECK(errors("task:\n  name: bytes\ndata:\n  train_glob: a\n  val_glob: b\n")
            .find("task.vocab_size: the bytes task has one token per byte value: expected 256, got 16") !=
        std::string::npos);
  CHECK(errors("data:\n  format: npy\n").find("data.format: expected one of llmc, raw") != std::string::npos);
}

namespace {
// A tokens-task run on a small llm.c corpus whose tokens follow a learnable rule.
trainer::TrainConfig tokens_config(const fs::path& data, const fs::path& run, int64_t steps) {
  trainer::TrainConfig c = tiny_config(run, steps);
  c.task.name = "tokens";
  c.task.vocab_size = 64;
  c.model.vocab_size = 64;
  c.task.seq_len = 16;
  c.task.loss_positions = "all";
  c.data.train_glob = (data / "train_*.bin").string();
  c.data.val_glob = (data / "val.bin").string();
  c.eval.every = 5;
  c.eval.num_examples = 16;
  c.eval.batch_size = 8;
  return c;
}
void write_counting_corpus(const fs::path& data) {
  for (int s = 0; s < 2; ++s) {  // tokens count up mod 64: every next token is predictable
    int32_t header[256] = {kLlmcMagic, 1, 4000};
    std::ofstream out(data / fmt::format("train_{:03d}.bin", s), std::ios::binary);
    out.write(reinterpret_cast<const char*>(header), sizeof(header));
    for (int i = 0; i < 4000; ++i) {
      uint16_t t = static_cast<uint16_t>((i * 7 + s) % 64);
      out.write(reinterpret_cast<const char*>(&t), 2);
    }
  }
  fs::copy_file(data / "train_001.bin", data / "val.bin");
}
}  // namespace

TEST_CASE("text data: a tokens run evaluates perplexity, learns, and resumes bit for bit") {
  fs::path data = fresh_dir("tok_data"), straight = fresh_dir("tok_straight"), split = fresh_dir("tok_split");
  write_counting_corpus(data);
  REQUIRE(trainer::run_training(tokens_config(data, straight, 20), trainer::RunOptions{}) == trainer::kExitOk);
  REQUIRE(trainer::run_training(tokens_config(data, split, 10), trainer::RunOptions{}) == trainer::kExitOk);
  REQUIRE(trainer::run_training(tokens_config(data, split, 20), trainer::RunOptions{}) == trainer::kExitOk);
  CHECK(train_losses(straight) == train_losses(split));
  check_identical(final_checkpoint(straight), final_checkpoint(split));
  // Evaluation lines carry perplexity = exp(loss), and the loss falls from chance (ln 64).
  std::ifstream in(straight / "metrics.jsonl");
  static const std::regex re(R"re("split": "eval".*"loss": ([^,]+),.*"perplexity": ([^,}]+))re");
  std::vector<double> losses;
  for (std::string line; std::getline(in, line);) {
    std::smatch m;
    if (!std::regex_search(line, m, re)) continue;
    losses.push_back(std::stod(m[1].str()));
    CHECK(std::stod(m[2].str()) == doctest::Approx(std::exp(losses.back())).epsilon(1e-9));
    CHECK(line.find("bits_per_byte") == std::string::npos);  // bytes task only
  }
  REQUIRE(losses.size() == 4);  // steps 5, 10, 15 and the end
  MESSAGE("tokens eval loss: ", losses.front(), " -> ", losses.back(), " (chance ", std::log(64.0), ")");
  CHECK(losses.back() < 0.8 * losses.front());
  fs::remove_all(data);
  fs::remove_all(straight);
  fs::remove_all(split);
}

TEST_CASE("text data (cuda): the captured step copies host batches and matches the eager step bit for bit") {
  if (!cuda::available()) {
    MESSAGE("SKIPPED: no CUDA device on this machine");
    return;
  }
  fs::path data = fresh_dir("tok_cuda_data"), eager = fresh_dir("tok_eager"), graph = fresh_dir("tok_graph");
  write_counting_corpus(data);
  auto cfg = [&](const fs::path& run, int64_t steps, const char* mode) {
    trainer::TrainConfig c = tokens_config(data, run, steps);
    c.device = "cuda";
    c.train.cuda_graph = mode;
    return c;
  };
  REQUIRE(trainer::run_training(cfg(eager, 20, "off"), trainer::RunOptions{}) == trainer::kExitOk);
  REQUIRE(trainer::run_training(cfg(graph, 10, "on"), trainer::RunOptions{}) == trainer::kExitOk);
  REQUIRE(trainer::run_training(cfg(graph, 20, "on"), trainer::RunOptions{}) == trainer::kExitOk);
  CHECK(train_losses(eager) == train_losses(graph));
  check_identical(final_checkpoint(eager), final_checkpoint(graph));
  fs::remove_all(data);
  fs::remove_all(eager);
  fs::remove_all(graph);
}

TEST_CASE("text data: the shipped text configs load with their documented values") {
  const fs::path configs = fs::path(S6_SOURCE_DIR) / "configs";
  trainer::TrainConfig b = trainer::load_config((configs / "text_bytes_cpu.yaml").string(), {});
  CHECK(b.task.name == "bytes");
  CHECK(b.task.vocab_size == 256);
  CHECK(b.task.loss_positions == "all");
  CHECK(b.device == "cpu");
  CHECK(b.data.train_glob == "/usr/lib/python3.*/**/*.py");
  CHECK(b.data.val_fraction == doctest::Approx(0.02));
  trainer::TrainConfig g = trainer::load_config((configs / "text_lm_130m.yaml").string(), {});
  CHECK(g.task.name == "tokens");
  CHECK(g.model.d_model == 768);
  CHECK(g.model.n_layer == 24);
  CHECK(g.model.padded_vocab() == 50280);
  CHECK(g.train.precision == "bf16");
  CHECK(g.data.format == "llmc");
}
