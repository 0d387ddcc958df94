// Data parallelism end to end on the CPU, with real `train` processes talking over the TCP star:
// 2 ranks x batch b against 1 rank x batch 2b, a 2-rank run stopped by SIGTERM and resumed, and a
// rank killed mid-run. The same trainer code runs under NCCL on GPUs; only the reductions differ.
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/train_helpers.h"
#include "trainer/checkpoint.h"
#include "trainer/dist/rendezvous.h"
#include "trainer/exit_codes.h"

using namespace s6;
using namespace s6::trainer;
using namespace s6::testing;

namespace {

// Two processes on two cores: one OpenMP thread each.
const std::vector<std::string> kOneThread = {"OMP_NUM_THREADS=1"};

double loss_of(const std::string& step_and_loss) {
  return std::stod(step_and_loss.substr(step_and_loss.find(':') + 1));
}

// Largest |a - b| / |b| over every element of every model dataset of two checkpoints.
double max_weight_difference(const std::string& a, const std::string& b) {
  CheckpointContents x = read_checkpoint(a), y = read_checkpoint(b);
  double worst = 0;
  for (const auto& [name, t] : x.model) {
    std::vector<float> u = t.to_vector<float>(), v = y.model.at(name).to_vector<float>();
    REQUIRE(u.size() == v.size());
    for (size_t i = 0; i < u.size(); ++i)
      worst = std::max(worst, std::fabs(double(u[i]) - v[i]) / std::max(1e-3, std::fabs(double(v[i]))));
  }
  return worst;
}

// The {"split": "eval"} line of a run's metrics.jsonl (its final evaluation).
std::string final_eval_line(const fs::path& run_dir) {
  std::ifstream in(run_dir / "metrics.jsonl");
  std::string last;
  for (std::string line; std::getline(in, line);)
    if (line.find("\"split\": \"eval\"") != std::string::npos) last = line;
  return last;
}

double json_number(const std::string& line, const std::string& key) {
  const size_t at = line.find("\"" + key + "\": ");
  REQUIRE(at != std::string::npos);
  return std::stod(line.substr(at + key.size() + 4));
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// wait_exit with a deadline: a child still running then is SIGKILLed and reported as -1.
int wait_exit_within(pid_t pid, std::chrono::seconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  int status = 0;
  while (::waitpid(pid, &status, WNOHANG) != pid) {
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
}

}  // namespace

TEST_CASE("data parallel (CPU): 2 ranks x batch 8 track 1 rank x batch 16 (--nproc 2)") {
  fs::path one = fresh_dir("dp_one"), two = fresh_dir("dp_two");
  TrainConfig c = tiny_config(one, 40);  // global batch 16: 8 per rank
  c.eval.batch_size = 8;                 // 4 evaluation forwards: 2 per rank
  write_yaml(one / "cfg.yaml", c);
  c.run_dir = two.string();
  c.dist.bucket_mb = 0.004;  // several buckets even for this small model
  write_yaml(two / "cfg.yaml", c);
  REQUIRE(wait_exit(spawn_train(one / "cfg.yaml", {}, kOneThread)) == kExitOk);
  REQUIRE(wait_exit(spawn_train(two / "cfg.yaml", {"--nproc", "2"}, kOneThread, two / "log.txt")) == kExitOk);
  const std::string log = read_file(two / "log.txt");
  std::smatch m;
  REQUIRE(std::regex_search(
      log, m, std::regex(R"(gradient averaging: \d+ parameters in (\d+) bucket\(s\) of up to 0.004 MB)")));
  CHECK(std::stoi(m[1]) > 1);
  std::vector<std::string> a = train_losses(one), b = train_losses(two);
  REQUIRE(a.size() == 40);
  REQUIRE(b.size() == 40);
  // Not bitwise: one rank takes the mean over 16 rows, two ranks each over 8 and then average, so
  // the float sums are grouped differently; the differences stay at float rounding.
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i)
    worst = std::max(worst, std::fabs(loss_of(b[i]) - loss_of(a[i])) / loss_of(a[i]));
  MESSAGE("largest relative loss difference over 40 steps: ", worst);
  CHECK(worst < 1e-5);
  CHECK(loss_of(a.back()) < loss_of(a.front()));  // it did train
  CHECK(max_weight_difference(final_checkpoint(two), final_checkpoint(one)) < 1e-3);
  // The final evaluation is split across the ranks (forward j on rank j mod 2) and summed.
  const std::string e1 = final_eval_line(one), e2 = final_eval_line(two);
  MESSAGE("final evaluation, 1 rank: ", e1, "; 2 ranks: ", e2);
  CHECK(json_number(e2, "accuracy") == json_number(e1, "accuracy"));
  CHECK(json_number(e2, "loss") == doctest::Approx(json_number(e1, "loss")).epsilon(1e-5));
  fs::remove_all(one);
  fs::remove_all(two);
}

TEST_CASE("data parallel (CPU): a 2-rank run stopped by SIGTERM resumes bit for bit") {
  fs::path straight = fresh_dir("dp_straight"), split = fresh_dir("dp_split");
  TrainConfig c = tiny_config(straight, 24);
  c.checkpoint.every = 0;  // only the stop and the end write checkpoints
  write_yaml(straight / "cfg.yaml", c);
  c.run_dir = split.string();
  write_yaml(split / "cfg.yaml", c);
  REQUIRE(wait_exit(spawn_train(straight / "cfg.yaml", {"--nproc", "2"}, kOneThread)) == kExitOk);
  // Every rank raises SIGTERM after step 10, as the launcher forwards a SIGTERM to every worker;
  // the ranks agree on stopping at the next step boundary, rank 0 saves, all exit 5.
  std::vector<std::string> env = kOneThread;
  env.push_back("S6_FAULT_INJECT=sigterm_at_step=10");
  CHECK(wait_exit(spawn_train(split / "cfg.yaml", {"--nproc", "2"}, env)) == kExitInterrupted);
  auto saved = list_checkpoints((split / "checkpoints").string());
  REQUIRE(saved.size() == 1);
  CHECK(saved.back().first > 10);
  CHECK(saved.back().first < 24);
  REQUIRE(wait_exit(spawn_train(split / "cfg.yaml", {"--nproc", "2"}, kOneThread)) == kExitOk);
  CHECK(train_losses(straight).size() == 24);
  CHECK(train_losses(straight) == train_losses(split));
  check_identical(final_checkpoint(straight), final_checkpoint(split));
  fs::remove_all(straight);
  fs::remove_all(split);
}

TEST_CASE("data parallel (CPU): when a rank is killed the other exits with code 6, naming it") {
  fs::path dir = fresh_dir("dp_kill");
  TrainConfig c = tiny_config(dir, 200);
  write_yaml(dir / "cfg.yaml", c);
  const std::string port = std::to_string(find_free_port());
  auto rank_env = [&](int rank) {
    std::vector<std::string> env = {"RANK=" + std::to_string(rank),
                                    "LOCAL_RANK=" + std::to_string(rank),
                                    "WORLD_SIZE=2",
                                    "LOCAL_WORLD_SIZE=2",
                                    "MASTER_ADDR=127.0.0.1",
                                    "MASTER_PORT=" + port,
                                    "OMP_NUM_THREADS=1"};
    if (rank == 1) env.push_back("S6_FAULT_INJECT=sigkill_at_step=5");
    return env;
  };
  const auto t0 = std::chrono::steady_clock::now();
  pid_t r0 = spawn_train(dir / "cfg.yaml", {}, rank_env(0), dir / "rank0.log");
  pid_t r1 = spawn_train(dir / "cfg.yaml", {}, rank_env(1), dir / "rank1.log");
  CHECK(wait_exit_within(r1, std::chrono::seconds(60)) == 128 + SIGKILL);
  CHECK(wait_exit_within(r0, std::chrono::seconds(60)) == kExitCommError);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::string log = read_file(dir / "rank0.log");
  INFO(log);
  CHECK(log.find("communication error") != std::string::npos);
  CHECK(log.find("rank 1") != std::string::npos);
  MESSAGE("rank 0 exited ", seconds, " s after the start (rank 1 killed itself after step 5)");
  fs::remove_all(dir);
}

// A socket listening on 127.0.0.1:port, as torchrun's agent store does on MASTER_PORT; -1 if taken.
static int listen_on(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sa.sin_port = htons(static_cast<uint16_t>(port));
  if (::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 || ::listen(fd, 16) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

TEST_CASE("data parallel (CPU): 2 torchrun ranks rendezvous while the agent store holds MASTER_PORT") {
  fs::path dir = fresh_dir("dp_agent_store");
  TrainConfig c = tiny_config(dir, 3);
  write_yaml(dir / "cfg.yaml", c);
  int port = 0, agent = -1;
  for (int attempt = 0; attempt < 20 && agent < 0; ++attempt) {  // MASTER_PORT held, the next one free
    port = find_free_port();
    int next = listen_on(port + 1);
    if (next < 0) continue;
    ::close(next);
    agent = listen_on(port);
  }
  REQUIRE(agent >= 0);
  auto rank_env = [&](int rank) {
    return std::vector<std::string>{"RANK=" + std::to_string(rank),
                                    "LOCAL_RANK=" + std::to_string(rank),
                                    "WORLD_SIZE=2",
                                    "MASTER_ADDR=127.0.0.1",
                                    "MASTER_PORT=" + std::to_string(port),
                                    "TORCHELASTIC_USE_AGENT_STORE=True",
                                    "OMP_NUM_THREADS=1"};
  };
  pid_t r0 = spawn_train(dir / "cfg.yaml", {}, rank_env(0), dir / "rank0.log");
  pid_t r1 = spawn_train(dir / "cfg.yaml", {}, rank_env(1), dir / "rank1.log");
  const int e1 = wait_exit_within(r1, std::chrono::seconds(60)),
            e0 = wait_exit_within(r0, std::chrono::seconds(60));
  ::close(agent);
  INFO(read_file(dir / "rank0.log"));
  CHECK(e0 == kExitOk);
  CHECK(e1 == kExitOk);
  CHECK(read_file(dir / "rank0.log").find("rendezvous 127.0.0.1:" + std::to_string(port + 1)) !=
        std::string::npos);
  fs::remove_all(dir);
}
