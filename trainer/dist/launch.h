// Built-in single-node launcher (`train --nproc N`): starts N copies of a program with the torchrun
// environment set, forwards SIGTERM/SIGINT to them, waits, and reports the first failure.
#pragma once
#include <chrono>
#include <string>
#include <vector>

namespace s6::trainer {

struct LocalLaunchOptions {
  int nproc = 1;
  // argv of each worker; argv[0] is the program (a path, or a name looked up in PATH). For the
  // trainer: {current_executable(), <the command line minus --nproc>}.
  std::vector<std::string> argv;
  std::string master_addr = "127.0.0.1";
  int master_port = 0;  // 0: a free port (find_free_port)
  // After a worker fails, the others get SIGTERM (the trainer then checkpoints and exits 5), and
  // after this long SIGKILL.
  std::chrono::milliseconds grace{std::chrono::seconds(30)};
  // Exit codes meaning "stopped on purpose" (the trainer's kExitInterrupted after a checkpoint):
  // still returned as the result, but they do not make the launcher terminate the other workers,
  // which are stopping too and may still be writing the checkpoint.
  std::vector<int> stop_codes{5};
};

// Forks and execs nproc workers; worker i gets RANK=i, LOCAL_RANK=i, WORLD_SIZE=LOCAL_WORLD_SIZE=
// nproc, MASTER_ADDR, MASTER_PORT, on top of this process's environment. Each worker runs in its
// own process group, so a terminal's Ctrl-C reaches only the launcher, which forwards it once
// (the trainer treats a second SIGINT as "exit now"); workers get SIGTERM if the launcher dies.
// While waiting, SIGTERM and SIGINT sent to this process are forwarded to all live workers (the
// previous handlers are restored on return).
// Returns 0 when every worker exits 0, else the first failure: its exit code, or 128 + signal
// when it was killed by a signal (127 when the program could not be executed).
// Throws s6::Error for bad options (nproc < 1, empty argv) or when fork fails (workers already
// started are killed first).
int launch_local(const LocalLaunchOptions& options);

// The absolute path of the running binary (/proc/self/exe), for re-executing it as workers.
std::string current_executable();

// Removes "--nproc N" or "--nproc=N" from args and returns N, or 0 when absent. Throws s6::Error
// for a missing, non-integer or < 1 value, and when set together with RANK in `rank_env` (the
// launcher's environment variable, or nullptr): a worker must never launch workers itself.
int take_nproc_flag(std::vector<std::string>& args, const char* rank_env);

}  // namespace s6::trainer
