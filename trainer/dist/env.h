// Launcher environment: who am I (rank, world size, local rank) and where is rank 0, for
// torchrun, Slurm srun, the built-in --nproc launcher, or a plain single-process run.
#pragma once
#include <cstdint>
#include <map>
#include <string>

namespace s6::trainer {

enum class Launcher { None, Torchrun, Slurm };  // torchrun also covers the built-in --nproc
const char* launcher_name(Launcher l);          // "none" | "torchrun" | "slurm"

// Port used when a launcher gives no MASTER_PORT (srun without it; torchrun always sets it).
// 29500 is torchrun's default, so a mixed setup picks the same one.
constexpr int kDefaultMasterPort = 29500;

struct LaunchEnv {
  Launcher launcher = Launcher::None;
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;                     // index among the ranks of this node: picks the GPU
  std::string master_addr = "127.0.0.1";  // host of rank 0, which runs the TCP rendezvous
  int master_port = kDefaultMasterPort;   // the port rank 0's rendezvous listens on (see below)
  bool agent_store = false;               // torchrun's agent already holds MASTER_PORT (its TCP store)
  bool distributed() const { return world_size > 1; }
};

using EnvMap = std::map<std::string, std::string>;

// Which variables are read, in order of precedence:
//   torchrun (and --nproc): RANK and WORLD_SIZE both set. LOCAL_RANK (default: RANK),
//     MASTER_ADDR (default 127.0.0.1), MASTER_PORT (default kDefaultMasterPort).
//   Slurm: SLURM_PROCID and SLURM_NTASKS set (and no RANK). SLURM_LOCALID (default 0),
//     master address = MASTER_ADDR if set, else SLURM_LAUNCH_NODE_IPADDR (the node running srun,
//     which is where task 0 runs for the usual single-allocation job step), else 127.0.0.1 when
//     SLURM_NTASKS is 1; port = MASTER_PORT if set, else kDefaultMasterPort.
//   None: neither; rank 0 of 1.
// The rendezvous port: S6_RENDEZVOUS_PORT when set; else, when torchrun says its agent hosts the
// store (TORCHELASTIC_USE_AGENT_STORE=True, which torchrun sets for its workers), MASTER_PORT + 1,
// because the agent's TCP store already listens on MASTER_PORT (every rank derives the same port;
// if that one is taken too, set S6_RENDEZVOUS_PORT); else MASTER_PORT.
// Throws s6::Error naming the variable for a non-integer or out-of-range value, RANK without
// WORLD_SIZE (or the reverse), RANK >= WORLD_SIZE, LOCAL_RANK >= WORLD_SIZE, a port outside 1..65535,
// or a multi-process Slurm step with no master address.
LaunchEnv parse_launch_env(const EnvMap& env);

// parse_launch_env over the process environment (only the variables above are read).
LaunchEnv launch_env_from_process();

// One line for the startup log, e.g. "torchrun: rank 1 of 4 (local 1), rendezvous 10.0.0.1:29500".
std::string describe(const LaunchEnv& env);

// Per-rank batch of a global batch: global / world_size. Throws s6::Error when it does not divide
// or either is < 1. Rank r then samples with Task::sample(per_rank, seed, k, r), which holds
// examples r*B .. r*B+B-1 of global batch k (data/task.h): the union over ranks is the same global
// batch whatever the world size, so runs with different world sizes see the same data.
int64_t per_rank_batch(int64_t global_batch, int world_size);

}  // namespace s6::trainer
