// What `train` prints for a person: the startup table (NCCL line), the progress line (elapsed and
// ETA) and the last line naming the checkpoint written.
#include <doctest/doctest.h>

#include <cstdlib>
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
  CHECK(last.find("finished at step 4: checkpoint " +
                  (dir / "run" / "checkpoints" / "step_00000004.h5").string()) != std::string::npos);
  fs::remove_all(dir);
}

TEST_CASE("train: OpenMP threads sleep instead of spinning unless the user chose a wait policy") {
  if (std::getenv("OMP_WAIT_POLICY") || std::getenv("GOMP_SPINCOUNT")) {
    MESSAGE("OMP_WAIT_POLICY or GOMP_SPINCOUNT is set in this environment: skipped");
    return;
  }
  fs::path dir = fresh_dir("omp_defaults");
  // libgomp prints its settings when it loads (OMP_DISPLAY_ENV); the last print is the final process's.
  auto spincount = [&](const std::vector<std::string>& env) {
    std::vector<std::string> all = env;
    all.push_back("OMP_DISPLAY_ENV=verbose");
    wait_exit(spawn_train(dir / "missing.yaml", {}, all, dir / "log.txt"));
    std::ifstream in(dir / "log.txt");
    std::string line, last;
    while (std::getline(in, line))
      if (line.find("GOMP_SPINCOUNT = ") != std::string::npos) last = line;
    return last;
  };
  CHECK(spincount({}).find("'0'") != std::string::npos);  // passive: no spinning
  CHECK(spincount({"S6_OMP_DEFAULTS=0"}).find("'300000'") != std::string::npos);
  CHECK(spincount({"OMP_WAIT_POLICY=active"}).find("'0'") == std::string::npos);
  fs::remove_all(dir);
}
