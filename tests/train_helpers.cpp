// Helpers shared by the tests that train: configs, run directories, metrics and checkpoints,
// and train as a child process (tests/train_helpers.h).
#include "tests/train_helpers.h"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <regex>

#include "trainer/checkpoint.h"

extern char** environ;

namespace s6::testing {

using namespace s6::trainer;

fs::path fresh_dir(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("s6_test_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

// A tiny copying task that a 2-layer model learns within a few hundred CPU steps.
TrainConfig tiny_config(const fs::path& dir, int64_t steps) {
  TrainConfig c;
  c.seed = 3;
  c.device = "cpu";
  c.model.d_model = 32;
  c.model.n_layer = 2;
  c.model.vocab_size = 8;
  c.task.name = "copying";
  c.task.vocab_size = 8;
  c.task.seq_len = 16;
  c.task.num_tokens = 4;
  c.optim.lr = 3e-3;
  c.optim.weight_decay = 0.0;
  c.train.steps = steps;
  c.train.batch_size = 16;
  c.train.log_every = 1;
  c.eval.every = 0;
  c.eval.num_examples = 32;
  c.eval.batch_size = 32;
  c.checkpoint.every = 5;
  c.checkpoint.keep_last = 100;
  c.run_dir = dir.string();
  return c;
}

std::vector<std::string> train_losses(const fs::path& run_dir) {
  std::ifstream in(run_dir / "metrics.jsonl");
  std::vector<std::string> out;
  std::string line;
  static const std::regex re(R"re(^\{"step": (\d+), "loss": ([^,]+),)re");
  while (std::getline(in, line)) {
    std::smatch m;
    if (std::regex_search(line, m, re)) out.push_back(m[1].str() + ":" + m[2].str());
  }
  return out;
}

// Bitwise comparison of every model and optimizer dataset of two checkpoints.
void check_identical(const std::string& a, const std::string& b) {
  CheckpointContents x = read_checkpoint(a), y = read_checkpoint(b);
  CHECK(x.meta.step == y.meta.step);
  CHECK(x.meta.optimizer_step == y.meta.optimizer_step);
  using Group = std::map<std::string, Tensor> CheckpointContents::*;
  for (Group group :
       {&CheckpointContents::model, &CheckpointContents::exp_avg, &CheckpointContents::exp_avg_sq}) {
    REQUIRE((x.*group).size() == (y.*group).size());
    for (const auto& [name, t] : x.*group) {
      CAPTURE(name);
      CHECK(t.to_vector<float>() == (y.*group).at(name).template to_vector<float>());
    }
  }
}

std::string final_checkpoint(const fs::path& run_dir) {
  auto all = list_checkpoints((run_dir / "checkpoints").string());
  REQUIRE(!all.empty());
  return all.back().second;
}

void write_yaml(const fs::path& file, const TrainConfig& c) { std::ofstream(file) << to_yaml(c); }

pid_t spawn_train(const fs::path& config, const std::vector<std::string>& extra,
                  const std::vector<std::string>& env, const fs::path& log) {
  // Everything the child needs is built before fork (the parent may have OpenMP threads).
  std::vector<std::string> args = {S6_TRAIN_BINARY, "--config", config.string()};
  args.insert(args.end(), extra.begin(), extra.end());
  std::vector<std::string> vars;
  for (char** e = environ; *e; ++e) {
    std::string kv = *e;
    bool replaced = false;
    for (const std::string& v : env) replaced |= kv.compare(0, v.find('=') + 1, v, 0, v.find('=') + 1) == 0;
    if (!replaced) vars.push_back(kv);
  }
  vars.insert(vars.end(), env.begin(), env.end());
  std::vector<char*> argv, envp;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (auto& v : vars) envp.push_back(v.data());
  envp.push_back(nullptr);
  const std::string out = log.empty() ? std::string("/dev/null") : log.string();
  pid_t pid = fork();
  if (pid == 0) {
    int fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, STDOUT_FILENO);
    dup2(fd, STDERR_FILENO);
    execve(argv[0], argv.data(), envp.data());
    _exit(127);
  }
  return pid;
}

int wait_exit(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return WEXITSTATUS(status);
}

}  // namespace s6::testing
