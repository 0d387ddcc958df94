// What `train` prints for a person: the startup table (NCCL line), the progress line (elapsed and
// ETA) and the last line naming the checkpoint written.
#include <doctest/doctest.h>

#include <fstream>
#include <regex>
#include <sstream>

#include "tests/train_helpers.h"

using namespace s6;
using namespace s6::testing;

TEST_CASE("train output: NCCL line, elapsed and ETA on progress lines, the last line names the checkpoint") {
  fs::path dir = fresh_dir("train_output");
  trainer::TrainConfig c = tiny_config(dir / "run", 4);
  c.train.log_every = 2;
  write_yaml(dir / "c.yaml", c);
  const fs::path log = dir / "out.txt";
  REQUIRE(wait_exit(spawn_train(dir / "c.yaml", {}, {}, log)) == 0);
  std::ifstream in(log);
  std::stringstream buf;
  buf << in.rdbuf();
  const std::string text = buf.str();
  CAPTURE(text);
  CHECK(std::regex_search(text, std::regex(R"(\n  nccl +(on|off))")));
  CHECK(std::regex_search(text, std::regex(R"(step 2/4 \|.*\| 0:\d\d elapsed, ETA 0:\d\d\n)")));
  CHECK(std::regex_search(text, std::regex(R"(step 4/4 \|.*\| 0:\d\d elapsed, ETA 0:00\n)")));
  std::string last = text.substr(text.find_last_of('\n', text.size() - 2) + 1);
  CHECK(last.find("finished at step 4: checkpoint " + (dir / "run" / "checkpoints" / "step_00000004.h5").string()) !=
        std::string::npos);
  fs::remove_all(dir);
}
