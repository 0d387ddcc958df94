// Nothing lost, ever (issue 19): the run.dir lock, checkpoint lineage and pruning, I/O failures
// (a tiny RLIMIT_FSIZE in the child stands in for a full disk), structurally corrupt checkpoints
// under --resume auto, exploded states, signals everywhere, required keys, memory estimates and
// resuming with a changed config. Each case runs the real `train` binary as a child process.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <hdf5.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "tests/train_helpers.h"
#include "trainer/checkpoint.h"
#include "trainer/config.h"
#include "trainer/exit_codes.h"

using namespace s6;
using namespace s6::trainer;
using namespace s6::testing;
namespace fs = std::filesystem;

namespace {

struct Child {
  pid_t pid = -1;
  fs::path log;
};

// Starts `train --config cfg extra...` with stdout/stderr into `log`; a file size limit (bytes,
// 0 = none) is set in the child only, so a write past it fails with EFBIG like a full disk.
Child start(const fs::path& cfg, const std::vector<std::string>& extra, const fs::path& log,
            rlim_t fsize_limit = 0) {
  std::vector<std::string> args = {S6_TRAIN_BINARY, "--config", cfg.string()};
  args.insert(args.end(), extra.begin(), extra.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const std::string out = log.string();
  pid_t pid = fork();
  if (pid == 0) {
    unsetenv("S6_FAULT_INJECT");
    int fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, STDOUT_FILENO);
    dup2(fd, STDERR_FILENO);
    if (fsize_limit) {
      rlimit r{fsize_limit, fsize_limit};
      setrlimit(RLIMIT_FSIZE, &r);
    }
    execv(argv[0], argv.data());
    _exit(127);
  }
  return {pid, log};
}

// The exit code (128 + signal when killed), or -1 after `seconds` (the child is then killed).
int finish(const Child& c, double seconds = 60) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  int status = 0;
  while (waitpid(c.pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > end) {
      kill(c.pid, SIGKILL);
      waitpid(c.pid, &status, 0);
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// Waits until `pred` holds (polling), at most `seconds`.
template <class Pred> bool wait_for(Pred pred, double seconds = 30) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (!pred()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

// Whether the process runs train (exec done: the forked test process has doctest's handlers) and
// has a SIGTERM handler installed (SigCgt in /proc/<pid>/status).
bool catches_sigterm(pid_t pid) {
  std::error_code ec;
  const fs::path exe = fs::read_symlink(fmt::format("/proc/{}/exe", pid), ec);
  if (ec || !fs::equivalent(exe, S6_TRAIN_BINARY, ec)) return false;
  std::ifstream in(fmt::format("/proc/{}/status", pid));
  for (std::string line; std::getline(in, line);)
    if (line.rfind("SigCgt:", 0) == 0) return (std::stoull(line.substr(7), nullptr, 16) >> (SIGTERM - 1)) & 1;
  return false;
}

int metric_lines(const fs::path& dir) {
  std::ifstream in(dir / "metrics.jsonl");
  int n = 0;
  for (std::string line; std::getline(in, line);) ++n;
  return n;
}

std::vector<int64_t> steps_in(const fs::path& dir) {
  std::vector<int64_t> out;
  for (const auto& [step, path] : list_checkpoints((dir / "checkpoints").string())) out.push_back(step);
  return out;
}

// A run dir with cfg.yaml: the tiny copying config, `steps` steps, a checkpoint every `every`.
fs::path prepared(const std::string& name, int64_t steps, int64_t every, TrainConfig* tweak = nullptr) {
  fs::path dir = fresh_dir(name);
  TrainConfig c = tweak ? *tweak : tiny_config(dir, steps);
  c.run_dir = dir.string();
  c.train.steps = steps;
  c.checkpoint.every = every;
  write_yaml(dir / "cfg.yaml", c);
  return dir;
}

int train(const fs::path& dir, const std::vector<std::string>& extra, const std::string& log_name = "log.txt",
          rlim_t fsize_limit = 0) {
  return finish(start(dir / "cfg.yaml", extra, dir / log_name, fsize_limit));
}

uint64_t fnv1a64(const void* data, size_t bytes) {
  const auto* p = static_cast<const unsigned char*>(data);
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < bytes; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

}  // namespace

TEST_CASE("reliability 1: a second train in a locked run.dir refuses naming the holder's pid, SIGHUP saves") {
  fs::path dir = prepared("lock", 1000000, 0);
  Child first = start(dir / "cfg.yaml", {}, dir / "first.txt");
  REQUIRE(wait_for([&] { return metric_lines(dir) >= 3; }));
  const int second = train(dir, {"train.steps=3"}, "second.txt");
  CHECK(second == kExitConfigError);
  const std::string msg = slurp(dir / "second.txt");
  CHECK(contains(msg, fmt::format("pid {}", first.pid)));
  CHECK(contains(msg, dir.string()));
  kill(first.pid, SIGHUP);
  CHECK(finish(first, 30) == kExitInterrupted);
  CHECK(!steps_in(dir).empty());  // SIGHUP is a stop like SIGTERM: the state is saved
  CHECK(contains(slurp(dir / "first.txt"), "signal 1"));
  fs::remove_all(dir);
}

TEST_CASE("reliability 2: a fresh start over another run's checkpoints refuses, pruning keeps other lineages") {
  fs::path dir = prepared("lineage", 20, 5);
  REQUIRE(train(dir, {"checkpoint.keep_last=2"}) == kExitOk);
  REQUIRE(steps_in(dir) == std::vector<int64_t>{15, 20});
  const std::string before = slurp(dir / "metrics.jsonl");
  // --resume never over a run: refused, nothing touched.
  CHECK(train(dir, {"--resume", "never", "train.steps=10", "checkpoint.keep_last=2"}) == kExitConfigError);
  CHECK(contains(slurp(dir / "log.txt"), "--overwrite"));
  CHECK(steps_in(dir) == std::vector<int64_t>{15, 20});
  CHECK(slurp(dir / "metrics.jsonl") == before);
  // --resume PATH of an older step: the newer checkpoint would be left behind, so refused too.
  const std::string older = (dir / "checkpoints" / checkpoint_name(15)).string();
  CHECK(train(dir, {"--resume", older, "checkpoint.keep_last=2"}) == kExitConfigError);
  CHECK(steps_in(dir) == std::vector<int64_t>{15, 20});
  // Told to: the old run's checkpoints go, and a later --resume auto continues the new run.
  CHECK(train(dir, {"--resume", "never", "--overwrite", "train.steps=10", "checkpoint.keep_last=2"}) ==
        kExitOk);
  CHECK(steps_in(dir) == std::vector<int64_t>{5, 10});
  CHECK(train(dir, {"train.steps=15", "checkpoint.keep_last=2"}) == kExitOk);
  CHECK(contains(slurp(dir / "log.txt"), "step_00000010.h5 (step 10)"));
  CHECK(steps_in(dir) == std::vector<int64_t>{10, 15});
  fs::remove_all(dir);
}

TEST_CASE("reliability 2b: pruning deletes only the current lineage's checkpoints") {
  fs::path a = prepared("prune_a", 5, 5), b = prepared("prune_b", 20, 5);
  REQUIRE(train(a, {}) == kExitOk);
  REQUIRE(train(b, {"train.steps=10", "checkpoint.keep_last=1"}) == kExitOk);
  REQUIRE(steps_in(b) == std::vector<int64_t>{10});
  // A checkpoint of another run, with a higher step, in b's directory: never counted, never deleted.
  fs::copy_file(a / "checkpoints" / checkpoint_name(5), b / "checkpoints" / checkpoint_name(50));
  CHECK(train(b, {"--resume", (b / "checkpoints" / checkpoint_name(10)).string(), "checkpoint.keep_last=1"}) ==
        kExitConfigError);  // the foreign step 50 is newer than the resume point
  fs::rename(b / "checkpoints" / checkpoint_name(50), b / "checkpoints" / checkpoint_name(7));
  CHECK(train(b, {"train.steps=20", "checkpoint.keep_last=1"}) == kExitOk);
  CHECK(steps_in(b) == std::vector<int64_t>{7, 20});
  fs::remove_all(a);
  fs::remove_all(b);
}

TEST_CASE("reliability 3: a full disk during a save exits 4 naming the file, the previous checkpoint stays") {
  fs::path dir = prepared("enospc", 10, 5);
  REQUIRE(train(dir, {"train.steps=5"}) == kExitOk);
  const fs::path five = dir / "checkpoints" / checkpoint_name(5);
  const auto size = fs::file_size(five);
  CHECK(train(dir, {}, "full.txt", size / 2) == kExitCheckpointError);  // not 139 (crash) or 153 (SIGXFSZ)
  const std::string msg = slurp(dir / "full.txt");
  CHECK(contains(msg, checkpoint_name(10)));
  CHECK(contains(msg, std::strerror(EFBIG)));
  CHECK(steps_in(dir) == std::vector<int64_t>{5});
  CHECK_NOTHROW(read_checkpoint(five.string()));
  for (const auto& e : fs::directory_iterator(dir / "checkpoints")) CHECK(e.path().extension() != ".tmp");
  CHECK(train(dir, {}) == kExitOk);  // space again: the run goes on from step 5
  CHECK(steps_in(dir) == std::vector<int64_t>{5, 10});
  fs::remove_all(dir);
}

TEST_CASE(
    "reliability 3b: metrics.jsonl or config.yaml hitting the size limit exits 4 naming it, nothing lost "
    "silently") {
  fs::path dir = prepared("metrics_full", 400, 0);
  CHECK(train(dir, {}, "log.txt", 4096) == kExitCheckpointError);
  const std::string msg = slurp(dir / "log.txt");
  CHECK(contains(msg, (dir / "metrics.jsonl").string()));
  CHECK(contains(msg, std::strerror(EFBIG)));
  // config.yaml too (written through a temp file): exit 4, the old one untouched. A long
  // eval.lengths makes it larger than the limit while the log (a file too) stays below it.
  const std::string config_before = slurp(dir / "config.yaml");
  std::string lengths = "eval.lengths=[17";
  for (int len = 18; len < 600; ++len) lengths += fmt::format(",{}", len);
  CHECK(train(dir, {"--resume", "never", "--overwrite", lengths + "]"}, "config.txt", 2048) ==
        kExitCheckpointError);
  CHECK(contains(slurp(dir / "config.txt"), "config.yaml"));
  CHECK(slurp(dir / "config.yaml") == config_before);
  // The log itself (stdout and stderr into one file) past the limit: an exit code, not an abort.
  CHECK(train(dir, {"--resume", "never", "--overwrite"}, "tiny.txt", 512) == kExitCheckpointError);
  fs::remove_all(dir);
}

TEST_CASE("reliability 3c: a read-only checkpoint directory exits 4 naming the file and the OS error") {
  if (geteuid() == 0) {
    MESSAGE("skipped: permissions do not bind root (the RLIMIT_FSIZE cases cover the same write path)");
    return;
  }
  fs::path dir = prepared("readonly", 10, 5);
  REQUIRE(train(dir, {"train.steps=5"}) == kExitOk);
  fs::permissions(dir / "checkpoints", fs::perms::owner_read | fs::perms::owner_exec);
  CHECK(train(dir, {}) == kExitCheckpointError);
  CHECK(contains(slurp(dir / "log.txt"), std::strerror(EACCES)));
  fs::permissions(dir / "checkpoints", fs::perms::owner_all);
  CHECK(steps_in(dir) == std::vector<int64_t>{5});
  fs::remove_all(dir);
}

TEST_CASE("reliability 4: --resume auto falls back past missing, misshaped and edited-meta checkpoints") {
  fs::path straight = prepared("corrupt_ref", 10, 2), dir = prepared("corrupt", 10, 2);
  REQUIRE(train(straight, {}) == kExitOk);
  REQUIRE(train(dir, {"train.steps=8"}) == kExitOk);
  REQUIRE(steps_in(dir) == std::vector<int64_t>{2, 4, 6, 8});
  auto ckpt = [&](int64_t s) { return (dir / "checkpoints" / checkpoint_name(s)).string(); };
  const std::string victim = "backbone.layers.0.mixer.in_proj.weight";
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  {  // step 8: a dataset deleted
    hid_t f = H5Fopen(ckpt(8).c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    REQUIRE(f >= 0);
    CHECK(H5Ldelete(f, ("/model/" + victim).c_str(), H5P_DEFAULT) >= 0);
    H5Fclose(f);
  }
  {  // step 6: the same dataset replaced by one of another shape, with a valid checksum
    hid_t f = H5Fopen(ckpt(6).c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    REQUIRE(f >= 0);
    CHECK(H5Ldelete(f, ("/model/" + victim).c_str(), H5P_DEFAULT) >= 0);
    std::vector<float> data(7 * 3, 0.5f);
    hsize_t dims[2] = {7, 3};
    hid_t space = H5Screate_simple(2, dims, nullptr);
    hid_t ds = H5Dcreate2(f, ("/model/" + victim).c_str(), H5T_IEEE_F32LE, space, H5P_DEFAULT, H5P_DEFAULT,
                          H5P_DEFAULT);
    H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data.data());
    uint64_t sum = fnv1a64(data.data(), data.size() * sizeof(float));
    hid_t aspace = H5Screate(H5S_SCALAR);
    hid_t attr = H5Acreate2(ds, "fnv1a64", H5T_STD_U64LE, aspace, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(attr, H5T_NATIVE_UINT64, &sum);
    H5Aclose(attr);
    H5Sclose(aspace);
    H5Dclose(ds);
    H5Sclose(space);
    H5Fclose(f);
  }
  {  // step 4: /meta step edited
    hid_t f = H5Fopen(ckpt(4).c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    REQUIRE(f >= 0);
    hid_t meta = H5Gopen2(f, "/meta", H5P_DEFAULT);
    hid_t attr = H5Aopen(meta, "step", H5P_DEFAULT);
    int64_t step = 3;
    CHECK(H5Awrite(attr, H5T_NATIVE_INT64, &step) >= 0);
    H5Aclose(attr);
    H5Gclose(meta);
    H5Fclose(f);
  }
  CHECK(train(dir, {}) == kExitOk);
  const std::string log = slurp(dir / "log.txt");
  CHECK(contains(log, checkpoint_name(8)));
  CHECK(contains(log, victim));
  CHECK(contains(log, checkpoint_name(6)));
  CHECK(contains(log, checkpoint_name(4)));
  CHECK(contains(log, "/meta"));
  CHECK(contains(log, "step_00000002.h5 (step 2)"));
  CHECK(train_losses(dir) == train_losses(straight));
  check_identical(final_checkpoint(straight), final_checkpoint(dir));
  fs::remove_all(straight);
  fs::remove_all(dir);
}

TEST_CASE("reliability 5: an exploded state is never saved, and --resume auto keeps the last sane one") {
  fs::path dir = prepared("explode", 10, 1);
  REQUIRE(train(dir, {"train.steps=3"}) == kExitOk);
  // lr 1e12: one update moves every weight by about 1e12, finite but exploded.
  CHECK(train(dir, {"optim.lr=1e12", "train.steps=6"}, "boom.txt") == kExitNonFinite);
  CHECK(contains(slurp(dir / "boom.txt"), "train.max_weight_abs"));
  CHECK(steps_in(dir) == std::vector<int64_t>{1, 2, 3});
  fs::remove_all(dir);
}

TEST_CASE("reliability 5b: SIGTERM is honoured in a streak of skipped steps, in evaluation and at start-up") {
  {  // a streak of skipped steps (the weights overflow after one update)
    fs::path dir = prepared("streak", 1000000, 0);
    Child c = start(dir / "cfg.yaml",
                    {"optim.lr=1e38", "optim.grad_clip=0", "train.max_consecutive_skips=100000000"},
                    dir / "log.txt");
    REQUIRE(wait_for([&] { return contains(slurp(dir / "metrics.jsonl"), "skip_nonfinite"); }));
    kill(c.pid, SIGTERM);
    CHECK(finish(c, 10) == kExitInterrupted);
    fs::remove_all(dir);
  }
  {  // a long evaluation: stopped within one batch, the step's checkpoint written
    fs::path dir = prepared("eval_stop", 1000, 0);
    Child c = start(dir / "cfg.yaml", {"eval.every=2", "eval.num_examples=100000000", "eval.batch_size=8"},
                    dir / "log.txt");
    REQUIRE(wait_for([&] { return metric_lines(dir) >= 2; }));
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    kill(c.pid, SIGTERM);
    CHECK(finish(c, 10) == kExitInterrupted);
    CHECK(steps_in(dir) == std::vector<int64_t>{2});
    fs::remove_all(dir);
  }
  {  // start-up: a stop as soon as main is running (its handlers in place) exits 5 before any step
    fs::path dir = prepared("startup_stop", 1000, 0);
    Child c = start(dir / "cfg.yaml", {"model.n_layer=8", "model.d_model=256"}, dir / "log.txt");
    REQUIRE(wait_for([&] { return catches_sigterm(c.pid); }, 30));
    kill(c.pid, SIGTERM);
    CHECK(finish(c, 30) == kExitInterrupted);
    CHECK(contains(slurp(dir / "log.txt"), "during start-up"));
    CHECK(metric_lines(dir) == 0);
    fs::remove_all(dir);
  }
}

TEST_CASE(
    "reliability 6: a config without task.name, absurd sizes and a bad run.dir are exit 2 naming the key") {
  fs::path dir = fresh_dir("cfg_checks");
  const std::vector<std::string> small = {"device=cpu",         "run.dir=" + (dir / "run").string(),
                                          "train.steps=1",      "task.seq_len=40",
                                          "train.batch_size=1", "eval.num_examples=1"};
  std::ofstream(dir / "empty.yaml") << "";
  std::ofstream(dir / "no_task.yaml") << "seed: 1\ntask:\n  vocab_size: 16\n";
  for (const char* name : {"empty.yaml", "no_task.yaml"}) {
    CAPTURE(name);
    CHECK(finish(start(dir / name, small, dir / "log.txt")) == kExitConfigError);
    CHECK(contains(slurp(dir / "log.txt"), "task.name"));
  }
  std::ofstream(dir / "ok.yaml") << "task:\n  name: copying\n";
  for (const char* big : {"model.d_model=1e9", "model.n_layer=1e7"}) {
    CAPTURE(big);
    std::vector<std::string> args = small;
    args.push_back(big);
    const auto t0 = std::chrono::steady_clock::now();
    CHECK(finish(start(dir / "ok.yaml", args, dir / "log.txt"), 60) == kExitConfigError);
    CHECK(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() < 5);
    CHECK(contains(slurp(dir / "log.txt"), std::string(big).substr(0, std::string(big).find('='))));
  }
  std::ofstream(dir / "a_file") << "x";
  std::vector<std::string> args = small;
  args.push_back("run.dir=" + (dir / "a_file").string());
  CHECK(finish(start(dir / "ok.yaml", args, dir / "log.txt")) == kExitConfigError);
  CHECK(contains(slurp(dir / "log.txt"), "run.dir"));
  fs::remove_all(dir);
}

TEST_CASE(
    "reliability 7: resuming with changed keys is reported key by key, train.steps below the checkpoint "
    "refused") {
  fs::path dir = prepared("changed", 10, 5);
  REQUIRE(train(dir, {"train.steps=5"}) == kExitOk);
  for (const char* change : {"seed=4", "train.batch_size=8", "task.seq_len=20"}) {
    CAPTURE(change);
    CHECK(train(dir, {change}) == kExitConfigError);
    const std::string log = slurp(dir / "log.txt");
    CHECK(contains(log, std::string(change).substr(0, std::string(change).find('='))));
    CHECK(contains(log, "--allow-config-change"));
    CHECK(steps_in(dir) == std::vector<int64_t>{5});
  }
  CHECK(train(dir, {"train.steps=3"}) == kExitConfigError);  // below the checkpoint's step 5
  CHECK(contains(slurp(dir / "log.txt"), "train.steps"));
  CHECK(steps_in(dir) == std::vector<int64_t>{5});
  CHECK(train(dir, {"optim.lr=1e-3", "train.steps=7"}) == kExitOk);  // an optimizer key: allowed, logged
  CHECK(contains(slurp(dir / "log.txt"), "optim.lr"));
  CHECK(train(dir, {"--allow-config-change", "seed=4", "train.steps=8"}) == kExitOk);
  CHECK(contains(slurp(dir / "log.txt"), "seed"));
  fs::remove_all(dir);
}
