// Launcher environment parsing (torchrun, Slurm, none) and the per-rank batch split.
#include "trainer/dist/env.h"

#include <fmt/format.h>

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <limits>

#include "core/error.h"

namespace s6::trainer {
namespace {

const std::string* find(const EnvMap& env, const char* name) {
  auto it = env.find(name);
  return it == env.end() ? nullptr : &it->second;
}

// Strict integer parse: the whole value must be a base-10 integer in [lo, hi]. strtol alone
// would accept "3abc" or " 3", which hides launcher misconfiguration.
int parse_int(const EnvMap& env, const char* name, long lo, long hi) {
  const std::string& s = *find(env, name);
  errno = 0;
  char* end = nullptr;
  long v = std::strtol(s.c_str(), &end, 10);
  bool ok = !s.empty() && !std::isspace(static_cast<unsigned char>(s[0])) && end && *end == '\0' && errno == 0;
  S6_CHECK(ok, "environment variable {}='{}' is not an integer", name, s);
  S6_CHECK(v >= lo && v <= hi, "environment variable {}={} is out of range (expected {}..{})", name, v, lo, hi);
  return static_cast<int>(v);
}

int get_int(const EnvMap& env, const char* name, long lo, long hi, int fallback) {
  return find(env, name) ? parse_int(env, name, lo, hi) : fallback;
}

constexpr long kMaxInt = std::numeric_limits<int>::max();

// Shared by both launchers: ranges relative to the world size, the port, the address.
void finish(const EnvMap& env, LaunchEnv& out, const char* rank_var, const char* world_var,
            const char* local_var) {
  S6_CHECK(out.rank < out.world_size, "environment variable {}={} must be less than {}={}", rank_var, out.rank,
           world_var, out.world_size);
  S6_CHECK(out.local_rank < out.world_size, "environment variable {}={} must be less than {}={}", local_var,
           out.local_rank, world_var, out.world_size);
  out.master_port = get_int(env, "MASTER_PORT", 1, 65535, kDefaultMasterPort);
  S6_CHECK(!out.master_addr.empty(), "environment variable MASTER_ADDR is empty");
  if (const std::string* agent = find(env, "TORCHELASTIC_USE_AGENT_STORE")) {
    std::string v = *agent;
    for (char& ch : v) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    out.agent_store = v == "true" || v == "1";
  }
  if (find(env, "S6_RENDEZVOUS_PORT")) {
    out.master_port = parse_int(env, "S6_RENDEZVOUS_PORT", 1, 65535);
  } else if (out.agent_store) {
    S6_CHECK(out.master_port < 65535,
             "MASTER_PORT=65535 is held by torchrun's agent store and there is no next "
             "port for s6's rendezvous: set S6_RENDEZVOUS_PORT");
    out.master_port += 1;
  }
}

}  // namespace

const char* launcher_name(Launcher l) {
  switch (l) {
    case Launcher::Torchrun: return "torchrun";
    case Launcher::Slurm: return "slurm";
    default: return "none";
  }
}

LaunchEnv parse_launch_env(const EnvMap& env) {
  LaunchEnv out;
  bool has_rank = find(env, "RANK"), has_world = find(env, "WORLD_SIZE");
  if (has_rank || has_world) {
    // A half-set pair usually means a hand-written script forgot one: refuse rather than guess.
    S6_CHECK(has_rank && has_world, "environment variable {} is set but {} is not",
             has_rank ? "RANK" : "WORLD_SIZE", has_rank ? "WORLD_SIZE" : "RANK");
    out.launcher = Launcher::Torchrun;
    out.world_size = parse_int(env, "WORLD_SIZE", 1, kMaxInt);
    out.rank = parse_int(env, "RANK", 0, kMaxInt);
    out.local_rank = get_int(env, "LOCAL_RANK", 0, kMaxInt, out.rank);
    if (const std::string* a = find(env, "MASTER_ADDR")) out.master_addr = *a;
    finish(env, out, "RANK", "WORLD_SIZE", "LOCAL_RANK");
    return out;
  }
  bool has_procid = find(env, "SLURM_PROCID"), has_ntasks = find(env, "SLURM_NTASKS");
  if (has_procid && has_ntasks) {
    out.launcher = Launcher::Slurm;
    out.world_size = parse_int(env, "SLURM_NTASKS", 1, kMaxInt);
    out.rank = parse_int(env, "SLURM_PROCID", 0, kMaxInt);
    out.local_rank = get_int(env, "SLURM_LOCALID", 0, kMaxInt, 0);
    if (const std::string* a = find(env, "MASTER_ADDR")) out.master_addr = *a;
    else if (const std::string* b = find(env, "SLURM_LAUNCH_NODE_IPADDR")) out.master_addr = *b;
    else
      S6_CHECK(out.world_size == 1,
               "Slurm step with SLURM_NTASKS={} but neither MASTER_ADDR nor "
               "SLURM_LAUNCH_NODE_IPADDR is set: export MASTER_ADDR=<host of task 0>",
               out.world_size);
    finish(env, out, "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID");
    return out;
  }
  // SLURM_PROCID without SLURM_NTASKS happens in `salloc` shells and batch scripts outside srun:
  // that is a single process, not an error.
  return out;
}

LaunchEnv launch_env_from_process() {
  static const char* kNames[] = {"RANK",
                                 "WORLD_SIZE",
                                 "LOCAL_RANK",
                                 "MASTER_ADDR",
                                 "MASTER_PORT",
                                 "SLURM_PROCID",
                                 "SLURM_NTASKS",
                                 "SLURM_LOCALID",
                                 "SLURM_LAUNCH_NODE_IPADDR",
                                 "TORCHELASTIC_USE_AGENT_STORE",
                                 "S6_RENDEZVOUS_PORT"};
  EnvMap env;
  for (const char* n : kNames)
    if (const char* v = std::getenv(n)) env[n] = v;
  return parse_launch_env(env);
}

std::string describe(const LaunchEnv& env) {
  if (!env.distributed()) return fmt::format("{}: single process", launcher_name(env.launcher));
  return fmt::format("{}: rank {} of {} (local {}), rendezvous {}:{}{}", launcher_name(env.launcher), env.rank,
                     env.world_size, env.local_rank, env.master_addr, env.master_port,
                     env.agent_store ? " (torchrun's agent store holds MASTER_PORT)" : "");
}

int64_t per_rank_batch(int64_t global_batch, int world_size) {
  S6_CHECK(world_size >= 1, "world size must be >= 1, got {}", world_size);
  S6_CHECK(global_batch >= 1, "train.batch_size must be >= 1, got {}", global_batch);
  S6_CHECK(global_batch % world_size == 0,
           "train.batch_size {} is not divisible by the world size {} (each rank takes an equal "
           "share of the global batch)",
           global_batch, world_size);
  return global_batch / world_size;
}

}  // namespace s6::trainer
