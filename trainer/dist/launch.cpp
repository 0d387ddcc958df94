// Built-in launcher: fork/exec of N workers with the torchrun environment, signal forwarding,
// first-failure exit code, and SIGKILL of the stragglers after a grace period.
#include "trainer/dist/launch.h"

#include <fmt/format.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "core/error.h"
#include "trainer/dist/rendezvous.h"

extern char** environ;

namespace s6::trainer {
namespace {

using Clock = std::chrono::steady_clock;

// Signal counts written by the handler, read by the wait loop (which forwards each one once).
volatile sig_atomic_t g_received[2] = {0, 0};  // [0] SIGTERM, [1] SIGINT
const int kForwarded[2] = {SIGTERM, SIGINT};

void on_signal(int sig) { ++g_received[sig == SIGINT ? 1 : 0]; }

int exit_code(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

// The variables a worker gets, replacing any inherited ones (e.g. from an outer torchrun).
std::vector<std::string> worker_env(int rank, int nproc, const std::string& addr, int port) {
  static const char* kOverridden[] = {
      "RANK=", "LOCAL_RANK=", "WORLD_SIZE=", "LOCAL_WORLD_SIZE=", "MASTER_ADDR=", "MASTER_PORT="};
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    bool skip = false;
    for (const char* k : kOverridden) skip = skip || std::strncmp(*e, k, std::strlen(k)) == 0;
    if (!skip) env.emplace_back(*e);
  }
  // N ranks on one node share its cores: unless the user chose, each gets its share of OpenMP
  // threads (the CPU kernels' threads; without this N x cores threads contend for the cores).
  if (!std::getenv("OMP_NUM_THREADS")) {
    const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
    env.push_back(fmt::format("OMP_NUM_THREADS={}", std::max(1u, cores / static_cast<unsigned>(nproc))));
  }
  for (const auto& kv : {std::pair<const char*, std::string>{"RANK", std::to_string(rank)},
                         {"LOCAL_RANK", std::to_string(rank)},
                         {"WORLD_SIZE", std::to_string(nproc)},
                         {"LOCAL_WORLD_SIZE", std::to_string(nproc)},
                         {"MASTER_ADDR", addr},
                         {"MASTER_PORT", std::to_string(port)}})
    env.push_back(fmt::format("{}={}", kv.first, kv.second));
  return env;
}

std::vector<char*> c_array(std::vector<std::string>& v) {
  std::vector<char*> out;
  for (std::string& s : v) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

// Runs in the forked child before exec: only async-signal-safe calls (the parent may have threads).
[[noreturn]] void exec_worker(pid_t parent, char** argv, char** envp, const std::string& fail_msg) {
  ::setpgid(0, 0);  // out of the terminal's group: Ctrl-C goes to the launcher only
  // Launcher killed (even by SIGKILL) => workers get SIGTERM. Linux ties this to the forking
  // THREAD, so launch_local is meant to run on the main thread.
  ::prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (::getppid() != parent) ::_exit(1);  // the launcher died before prctl took effect
  struct sigaction sa {};
  sa.sa_handler = SIG_DFL;
  for (int sig : kForwarded) ::sigaction(sig, &sa, nullptr);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  ::execvpe(argv[0], argv, envp);
  const char* why = std::strerror(errno);
  ssize_t ignored = ::write(2, fail_msg.data(), fail_msg.size());
  ignored = ::write(2, why, std::strlen(why));
  ignored = ::write(2, "\n", 1);
  (void)ignored;
  ::_exit(127);
}

}  // namespace

int launch_local(const LocalLaunchOptions& o) {
  S6_CHECK(o.nproc >= 1, "--nproc must be >= 1, got {}", o.nproc);
  S6_CHECK(!o.argv.empty() && !o.argv[0].empty(), "launch_local: no program to run");
  const int port = o.master_port ? o.master_port : find_free_port();
  // Everything exec needs is built before forking: after fork only async-signal-safe calls are
  // allowed in the child.
  std::vector<std::vector<std::string>> envs, argvs(o.nproc, o.argv);
  std::vector<std::vector<char*>> env_ptrs, argv_ptrs;
  for (int r = 0; r < o.nproc; ++r) envs.push_back(worker_env(r, o.nproc, o.master_addr, port));
  for (int r = 0; r < o.nproc; ++r) {
    env_ptrs.push_back(c_array(envs[r]));
    argv_ptrs.push_back(c_array(argvs[r]));
  }
  const std::string fail_msg = fmt::format("launch: cannot execute '{}': ", o.argv[0]);

  g_received[0] = g_received[1] = 0;
  struct sigaction sa {
  }, old[2];
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  for (int i = 0; i < 2; ++i) ::sigaction(kForwarded[i], &sa, &old[i]);
  auto restore = [&] {
    for (int i = 0; i < 2; ++i) ::sigaction(kForwarded[i], &old[i], nullptr);
  };

  std::vector<pid_t> pids;
  const pid_t self = ::getpid();
  for (int r = 0; r < o.nproc; ++r) {
    pid_t pid = ::fork();
    if (pid == 0) exec_worker(self, argv_ptrs[r].data(), env_ptrs[r].data(), fail_msg);
    if (pid < 0) {
      int err = errno;
      for (pid_t p : pids) ::kill(p, SIGKILL);
      for (pid_t p : pids) ::waitpid(p, nullptr, 0);
      restore();
      S6_FAIL("launch: fork of worker {} failed: {}", r, std::strerror(err));
    }
    pids.push_back(pid);
  }

  std::vector<bool> alive(o.nproc, true);
  int live = o.nproc, result = 0, forwarded[2] = {0, 0};
  bool failing = false, killed = false;
  Clock::time_point kill_at{};
  auto signal_live = [&](int sig) {
    for (int r = 0; r < o.nproc; ++r)
      if (alive[r]) ::kill(pids[r], sig);
  };
  while (live > 0) {
    for (int i = 0; i < 2; ++i)
      for (; forwarded[i] < g_received[i]; ++forwarded[i]) signal_live(kForwarded[i]);
    for (int r = 0; r < o.nproc; ++r) {
      int status = 0;
      if (!alive[r] || ::waitpid(pids[r], &status, WNOHANG) != pids[r]) continue;
      alive[r] = false;
      --live;
      int code = exit_code(status);
      if (code != 0 && result == 0) result = code;
      bool stop = std::find(o.stop_codes.begin(), o.stop_codes.end(), code) != o.stop_codes.end();
      if (code != 0 && !stop && !failing) {
        // One worker failed: the others would block in their next collective until its timeout.
        failing = true;
        kill_at = Clock::now() + o.grace;
        signal_live(SIGTERM);
      }
    }
    if (failing && !killed && live > 0 && Clock::now() >= kill_at) {
      signal_live(SIGKILL);
      killed = true;
    }
    if (live > 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  restore();
  return result;
}

std::string current_executable() {
  char buf[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  S6_CHECK(n > 0, "cannot read /proc/self/exe: {}", std::strerror(errno));
  return std::string(buf, static_cast<size_t>(n));
}

int take_nproc_flag(std::vector<std::string>& args, const char* rank_env) {
  int n = 0;
  for (size_t i = 0; i < args.size();) {
    std::string value;
    if (args[i] == "--nproc") {
      S6_CHECK(i + 1 < args.size(), "--nproc needs a value (the number of worker processes)");
      value = args[i + 1];
      args.erase(args.begin() + i, args.begin() + i + 2);
    } else if (args[i].rfind("--nproc=", 0) == 0) {
      value = args[i].substr(8);
      args.erase(args.begin() + i);
    } else {
      ++i;
      continue;
    }
    char* end = nullptr;
    long v = std::strtol(value.c_str(), &end, 10);
    S6_CHECK(!value.empty() && *end == '\0' && v >= 1 && v <= 4096,
             "--nproc expects a process count >= 1, got '{}'", value);
    n = static_cast<int>(v);
  }
  S6_CHECK(n == 0 || rank_env == nullptr,
           "--nproc {} was given to a process that already has RANK={} (started by a launcher): "
           "use either --nproc or torchrun/srun, not both",
           n, rank_env ? rank_env : "");
  return n;
}

}  // namespace s6::trainer
