// scripts/prepare_tokens.py end to end: a tiny local tokenizer, text files in, llm.c shards out,
// read back by the tokens task's corpus reader (skipped without python3 + tokenizers).
#include <doctest/doctest.h>

#include <cstdlib>
#include <fstream>

#include "data/token_corpus.h"
#include "tests/train_helpers.h"

using namespace s6;
using namespace s6::data;
namespace fs = std::filesystem;

namespace {

bool run(const std::string& cmd) { return std::system((cmd + " > /dev/null 2>&1").c_str()) == 0; }

std::vector<int32_t> read_all(const std::string& glob) {
  TokenCorpus c(glob, TokenFormat::LlmC, "test");
  std::vector<int32_t> out(static_cast<size_t>(c.size()));
  c.read(0, c.size(), out.data());
  return out;
}

}  // namespace

TEST_CASE("prepare_tokens.py: text -> llm.c shards that the tokens task reads back (uint16 and uint32)") {
  if (!run("python3 -c 'import tokenizers'")) {
    MESSAGE("SKIPPED: no python3 with tokenizers (pip install tokenizers) on this machine");
    return;
  }
  fs::path dir = testing::fresh_dir("prepare_tokens");
  // A word-level tokenizer built here (no download): 6 words, then fillers up to id 69999.
  std::ofstream(dir / "make.py") << R"(import sys
from tokenizers import Tokenizer, models, pre_tokenizers
vocab = {"<|endoftext|>": 0, "[UNK]": 1, "hello": 2, "world": 3, "mamba": 4, "scan": 5}
if sys.argv[2] == "big":
    vocab.update({f"w{i}": i for i in range(6, 70000)})
t = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
t.pre_tokenizer = pre_tokenizers.Whitespace()
t.save(sys.argv[1])
)";
  fs::create_directories(dir / "text/sub");
  std::ofstream(dir / "text/a.txt") << "hello world mamba\n";
  std::ofstream(dir / "text/sub/b.txt") << "scan scan hello zzz w69999\n";
  std::ofstream(dir / "text/sub/c.txt") << "world\n";
  const std::string script = std::string(S6_SOURCE_DIR) + "/scripts/prepare_tokens.py";
  for (const char* size : {"small", "big"}) {
    CAPTURE(size);
    const fs::path tok = dir / (std::string(size) + ".json"), out = dir / size;
    REQUIRE(run(fmt::format("python3 {} {} {}", (dir / "make.py").string(), tok.string(), size)));
    REQUIRE(run(fmt::format("python3 {} --tokenizer {} --out {} --val-fraction 0.34 '{}'", script, tok.string(),
                            out.string(), (dir / "text/**/*.txt").string())));
    // Documents in sorted path order (a.txt, sub/b.txt, sub/c.txt), each opened by <|endoftext|> = 0;
    // the last one (a third) is validation's. Unknown words map to [UNK] = 1; w69999 only exists in "big".
    const int32_t w = std::string(size) == "big" ? 69999 : 1;
    CHECK(read_all((out / "data_train_*.bin").string()) == std::vector<int32_t>{0, 2, 3, 4, 0, 5, 5, 2, 1, w});
    CHECK(read_all((out / "data_val_*.bin").string()) == std::vector<int32_t>{0, 3});
    // uint16 while every id fits, uint32 (llm.c version 2) for the 70000-word vocabulary.
    std::ifstream shard(out / "data_train_000000.bin", std::ios::binary);
    int32_t header[3];
    shard.read(reinterpret_cast<char*>(header), sizeof(header));
    CHECK(header[1] == (std::string(size) == "big" ? 2 : 1));
  }
  // --train-tokenizer writes the tokenizer into a folder that does not exist yet (the output's).
  const fs::path trained = dir / "trained/bpe.json";
  REQUIRE(run(fmt::format("python3 {} --train-tokenizer 300 --tokenizer {} --out {} '{}'", script,
                          trained.string(), (dir / "trained").string(), (dir / "text/**/*.txt").string())));
  CHECK(fs::exists(trained));
  CHECK(read_all((dir / "trained/data_train_*.bin").string()).size() > 4);
  CHECK_FALSE(
      run(fmt::format("python3 {} --tokenizer {} --out {} '{}'", script, (dir / "missing.json").string(),
                      (dir / "x").string(), (dir / "text/*.txt").string())));
  fs::remove_all(dir);
}
