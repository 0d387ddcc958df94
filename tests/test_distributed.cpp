// Distributed runtime (trainer/dist/: env, rendezvous, agreement, watchdog, launch, gradient_buckets): env
// parsing, loopback rendezvous between forked processes, startup check, watchdog, --nproc launcher, batch
// sharding, gradient bucket assignment and launch order. CPU only.
#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <thread>

#include <fmt/format.h>

#include "autograd/tape.h"
#include "data/task.h"
#include "layers/mamba.h"
#include "layers/ops.h"
#include "trainer/dist/agreement.h"
#include "trainer/dist/env.h"
#include "trainer/dist/gradient_buckets.h"
#include "trainer/dist/launch.h"
#include "trainer/dist/rendezvous.h"
#include "trainer/dist/watchdog.h"

using namespace s6;
using namespace s6::trainer;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

std::string env_error(const EnvMap& env) {
  try {
    parse_launch_env(env);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Runs fn(rank) in one forked child per rank and returns what each returned ("error: <what>" when
// it threw). Children always end in _exit; any still running at the deadline are SIGKILLed and
// reported as "killed", so a hang fails the test instead of blocking ctest.
std::map<int, std::string> run_ranks(const std::vector<int>& ranks, const std::function<std::string(int)>& fn,
                                     double deadline_s = 20) {
  std::map<int, std::pair<pid_t, int>> kids;
  for (int r : ranks) {
    int p[2];
    REQUIRE(::pipe(p) == 0);
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      ::close(p[0]);
      std::string out;
      try {
        out = fn(r);
      } catch (const std::exception& e) {
        out = std::string("error: ") + e.what();
      }
      ssize_t ignored = ::write(p[1], out.data(), out.size());
      (void)ignored;
      ::_exit(0);
    }
    ::close(p[1]);
    kids[r] = {pid, p[0]};
  }
  std::map<int, std::string> out;
  const auto deadline = Clock::now() + std::chrono::duration<double>(deadline_s);
  while (out.size() < kids.size()) {
    for (auto& [r, kid] : kids) {
      if (out.count(r)) continue;
      bool late = Clock::now() >= deadline;
      if (late) ::kill(kid.first, SIGKILL);
      if (::waitpid(kid.first, nullptr, late ? 0 : WNOHANG) != kid.first) continue;
      std::string s;
      char buf[4096];
      for (ssize_t n; (n = ::read(kid.second, buf, sizeof buf)) > 0;) s.append(buf, static_cast<size_t>(n));
      ::close(kid.second);
      out[r] = late ? "killed" : s;
    }
    std::this_thread::sleep_for(5ms);
  }
  return out;
}

RendezvousOptions opts(int rank, int world, int port, std::chrono::milliseconds timeout = 10s) {
  RendezvousOptions o;
  o.master_port = port;
  o.rank = rank;
  o.world_size = world;
  o.timeout = timeout;
  return o;
}

}  // namespace

TEST_CASE("distributed: torchrun, Slurm and plain environments") {
  LaunchEnv none = parse_launch_env({});
  CHECK((none.launcher == Launcher::None && none.rank == 0 && none.world_size == 1 && !none.distributed()));
  CHECK(parse_launch_env({{"SLURM_PROCID", "0"}}).launcher == Launcher::None);  // salloc shell, no srun

  LaunchEnv t = parse_launch_env({{"RANK", "3"},
                                  {"WORLD_SIZE", "8"},
                                  {"LOCAL_RANK", "1"},
                                  {"MASTER_ADDR", "node7"},
                                  {"MASTER_PORT", "1234"}});
  CHECK((t.launcher == Launcher::Torchrun && t.rank == 3 && t.world_size == 8 && t.local_rank == 1));
  CHECK((t.master_addr == "node7" && t.master_port == 1234 && t.distributed()));
  CHECK(describe(t) == "torchrun: rank 3 of 8 (local 1), rendezvous node7:1234");
  RendezvousOptions ro = rendezvous_options(t, 7s);
  CHECK((ro.master_addr == "node7" && ro.master_port == 1234 && ro.rank == 3 && ro.world_size == 8 &&
         ro.timeout == 7s));
  LaunchEnv d = parse_launch_env({{"RANK", "2"}, {"WORLD_SIZE", "4"}});
  CHECK((d.local_rank == 2 && d.master_addr == "127.0.0.1" && d.master_port == kDefaultMasterPort));

  EnvMap slurm{{"SLURM_PROCID", "5"},
               {"SLURM_NTASKS", "16"},
               {"SLURM_LOCALID", "1"},
               {"SLURM_LAUNCH_NODE_IPADDR", "10.0.0.2"}};
  LaunchEnv s = parse_launch_env(slurm);
  CHECK((s.launcher == Launcher::Slurm && s.rank == 5 && s.world_size == 16 && s.local_rank == 1));
  CHECK((s.master_addr == "10.0.0.2" && s.master_port == kDefaultMasterPort));
  slurm["MASTER_ADDR"] = "head";
  slurm["MASTER_PORT"] = "40000";
  s = parse_launch_env(slurm);
  CHECK((s.master_addr == "head" && s.master_port == 40000));
  slurm["RANK"] = "0";  // torchrun inside an allocation: its variables win
  slurm["WORLD_SIZE"] = "2";
  CHECK(parse_launch_env(slurm).launcher == Launcher::Torchrun);
  CHECK(parse_launch_env({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "1"}}).master_addr == "127.0.0.1");
}

TEST_CASE("distributed: under torchrun's agent store the rendezvous moves off MASTER_PORT") {
  EnvMap env{{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", "29500"}};
  CHECK(parse_launch_env(env).master_port == 29500);
  env["TORCHELASTIC_USE_AGENT_STORE"] = "False";
  CHECK(parse_launch_env(env).master_port == 29500);
  env["TORCHELASTIC_USE_AGENT_STORE"] = "True";
  LaunchEnv t = parse_launch_env(env);
  CHECK((t.master_port == 29501 && t.agent_store));
  CHECK(
      describe(t) ==
      "torchrun: rank 1 of 2 (local 1), rendezvous 127.0.0.1:29501 (torchrun's agent store holds MASTER_PORT)");
  env["S6_RENDEZVOUS_PORT"] = "40001";
  CHECK(parse_launch_env(env).master_port == 40001);
  env.erase("S6_RENDEZVOUS_PORT");
  env["MASTER_PORT"] = "65535";
  CHECK_THROWS_WITH_AS(parse_launch_env(env), doctest::Contains("set S6_RENDEZVOUS_PORT"), s6::Error);
  env["S6_RENDEZVOUS_PORT"] = "0";
  CHECK_THROWS_WITH_AS(parse_launch_env(env), doctest::Contains("S6_RENDEZVOUS_PORT=0 is out of range"),
                       s6::Error);
}

TEST_CASE("distributed: malformed launcher variables are named") {
  auto has = [](const std::string& err, const char* s) { return err.find(s) != std::string::npos; };
  CHECK(has(env_error({{"RANK", "4"}, {"WORLD_SIZE", "4"}}), "RANK=4 must be less than WORLD_SIZE=4"));
  CHECK(has(env_error({{"RANK", "abc"}, {"WORLD_SIZE", "4"}}), "RANK='abc' is not an integer"));
  CHECK(has(env_error({{"RANK", "1x"}, {"WORLD_SIZE", "4"}}), "RANK='1x'"));
  CHECK(has(env_error({{"RANK", " 1"}, {"WORLD_SIZE", "4"}}), "RANK=' 1'"));
  CHECK(has(env_error({{"RANK", "-1"}, {"WORLD_SIZE", "4"}}), "RANK=-1 is out of range"));
  CHECK(has(env_error({{"RANK", "0"}, {"WORLD_SIZE", "0"}}), "WORLD_SIZE=0 is out of range"));
  CHECK(has(env_error({{"RANK", "0"}, {"WORLD_SIZE", "99999999999"}}), "WORLD_SIZE"));
  CHECK(has(env_error({{"RANK", "0"}}), "RANK is set but WORLD_SIZE is not"));
  CHECK(has(env_error({{"WORLD_SIZE", "2"}}), "WORLD_SIZE is set but RANK is not"));
  CHECK(has(env_error({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", "2"}}), "LOCAL_RANK=2"));
  CHECK(has(env_error({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", "70000"}}), "MASTER_PORT=70000"));
  CHECK(has(env_error({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", ""}}), "MASTER_ADDR"));
  CHECK(has(env_error({{"SLURM_PROCID", "4"}, {"SLURM_NTASKS", "4"}, {"SLURM_LAUNCH_NODE_IPADDR", "h"}}),
            "SLURM_PROCID=4 must be less than SLURM_NTASKS=4"));
  CHECK(has(env_error({{"SLURM_PROCID", "x"}, {"SLURM_NTASKS", "4"}}), "SLURM_PROCID='x'"));
  CHECK(has(env_error({{"SLURM_PROCID", "1"}, {"SLURM_NTASKS", "4"}}), "SLURM_LAUNCH_NODE_IPADDR"));
  // The real environment is read the same way (a forked child, so this process's env is untouched).
  auto out = run_ranks({0}, [](int) {
    ::setenv("RANK", "1", 1);
    ::setenv("WORLD_SIZE", "2", 1);
    ::setenv("MASTER_PORT", "31000", 1);
    return describe(launch_env_from_process());
  });
  CHECK(out[0].rfind("torchrun: rank 1 of 2 (local 1), rendezvous ", 0) == 0);
  CHECK(out[0].find(":31000") != std::string::npos);
}

TEST_CASE("distributed: the global batch is split across ranks in rank order") {
  CHECK(per_rank_batch(64, 1) == 64);
  CHECK(per_rank_batch(64, 4) == 16);
  CHECK_THROWS_WITH_AS(per_rank_batch(10, 4), doctest::Contains("not divisible by the world size 4"), Error);
  CHECK_THROWS_AS(per_rank_batch(8, 0), Error);
  // Rank r's batch k holds examples r*B .. r*B+B-1 of global batch k, so the union over ranks is
  // the same global batch for every world size (data/task.h).
  data::TaskParams p;
  p.vocab = 16;
  p.seq_len = 64;
  p.num_tokens = 4;
  for (const char* name : {"copying", "induction_heads"}) {
    auto task = data::make_task(name, p);
    const auto whole = task->sample(8, 11, 5, 0).inputs.to_vector<int32_t>();
    for (int world : {1, 2, 4, 8}) {
      CAPTURE(world);
      std::vector<int32_t> joined;
      for (int r = 0; r < world; ++r) {
        auto part =
            task->sample(per_rank_batch(8, world), 11, 5, static_cast<uint32_t>(r)).inputs.to_vector<int32_t>();
        joined.insert(joined.end(), part.begin(), part.end());
      }
      CHECK(joined == whole);
    }
  }
}

TEST_CASE("distributed: rendezvous broadcasts a 128-byte id and gathers records over loopback") {
  const int port = find_free_port(), world = 4;
  auto out = run_ranks({0, 1, 2, 3}, [&](int rank) {
    Rendezvous rdv(opts(rank, world, port));
    unsigned char id[128] = {};
    if (rank == 0)
      for (int i = 0; i < 128; ++i) id[i] = static_cast<unsigned char>(i * 7 + 3);
    rdv.broadcast(id, sizeof id, "nccl unique id");
    std::string result;
    for (int i = 0; i < 128; ++i) result += id[i] == static_cast<unsigned char>(i * 7 + 3) ? "" : "bad id;";
    auto all = rdv.gather("record of " + std::to_string(rank), "records");
    if (rank == 0) {
      for (int r = 0; r < world; ++r)
        result += all.at(r) == "record of " + std::to_string(r) ? "" : "bad gather;";
    } else if (!all.empty()) {
      result += "non-root got records;";
    }
    rdv.barrier("end");
    return result.empty() ? std::string("ok") : result;
  });
  for (int r = 0; r < world; ++r) CHECK(out[r] == "ok");
  // World size 1 opens no socket and every call is local.
  Rendezvous single(opts(0, 1, 1));
  CHECK(single.gather("x", "g") == std::vector<std::string>{"x"});
  CHECK(single.broadcast(std::string("y"), "b") == "y");
}

TEST_CASE("distributed: the CPU all-reduce sums in rank order and chunks past the frame limit") {
  const int port = find_free_port(), world = 3;
  const size_t n = 300000;  // 1.2 MB of floats: two frames
  auto value = [](int rank, size_t i) { return static_cast<float>(std::sin(0.001 * i + rank) * (rank + 1)); };
  auto out = run_ranks({0, 1, 2}, [&](int rank) {
    Rendezvous rdv(opts(rank, world, port));
    std::vector<float> grads(n);
    for (size_t i = 0; i < n; ++i) grads[i] = value(rank, i);
    rdv.all_reduce(grads.data(), n, Rendezvous::Reduce::Mean, "gradients");
    std::vector<double> sums = {1.0 + rank, 0.25 * rank};
    rdv.all_reduce(sums.data(), sums.size(), Rendezvous::Reduce::Sum, "values");
    size_t bad = 0;
    for (size_t i = 0; i < n; ++i) {
      double acc = 0;
      for (int r = 0; r < world; ++r) acc += value(r, i);  // the rank order rank 0 uses
      bad += grads[i] != static_cast<float>(acc / world);
    }
    if (bad) return fmt::format("{} of {} means differ", bad, n);
    return sums == std::vector<double>{6.0, 0.75} ? std::string("ok") : std::string("bad sums");
  });
  for (int r = 0; r < world; ++r) CHECK(out[r] == "ok");
}

TEST_CASE("distributed: ranks may start before rank 0, and stray connections are dropped") {
  const int port = find_free_port();
  auto out = run_ranks({0, 1, 2, 3, 4}, [&](int who) -> std::string {
    if (who >= 3) {
      // Not an s6 rank (a port scanner, a health check): connects, sends garbage or nothing, and
      // leaves. Rank 0 must drop it and go on.
      const auto deadline = Clock::now() + 5s;
      for (;;) {
        int fd = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in sa{};
        sa.sin_family = AF_INET;
        sa.sin_port = htons(static_cast<uint16_t>(port));
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0) {
          if (who == 3) (void)!::write(fd, "\xff\xff\xff\xff\xff\xff\xff\xff", 8);
          ::close(fd);
          return "ok";
        }
        ::close(fd);
        if (Clock::now() > deadline) return "stray never connected";
        std::this_thread::sleep_for(20ms);
      }
    }
    if (who == 0) std::this_thread::sleep_for(300ms);  // the others retry refused connections
    if (who == 2) std::this_thread::sleep_for(800ms);  // so the strays arrive before the last rank
    Rendezvous rdv(opts(who, 3, port));
    return rdv.broadcast(std::string("hello"), "greeting") == "hello" ? "ok" : "bad";
  });
  for (int r = 0; r < 5; ++r) CHECK(out[r] == "ok");
}

TEST_CASE("distributed: rendezvous failures name the rank, peer and operation, never hang") {
  // Nobody listening: the connect retries end at the deadline.
  auto t0 = Clock::now();
  CHECK_THROWS_WITH_AS(Rendezvous(opts(1, 2, find_free_port(), 300ms)),
                       doctest::Contains("rank 1: connect with rank 0 (127.0.0.1:"), CommError);
  CHECK(seconds_since(t0) < 3);
  try {
    Rendezvous late(opts(2, 3, find_free_port(), 200ms));
    FAIL("no error");
  } catch (const CommError& e) {
    CHECK(std::string(e.what()).find("timed out after 0.2 s (last error: Connection refused)") !=
          std::string::npos);
  }
  // Rank 0 alone: names the ranks that never came.
  t0 = Clock::now();
  CHECK_THROWS_WITH_AS(Rendezvous(opts(0, 3, find_free_port(), 300ms)),
                       doctest::Contains("waiting for rank(s) 1, 2 to connect"), CommError);
  CHECK(seconds_since(t0) < 3);

  // A peer that dies, and one that stays silent, during a gather.
  for (bool dies : {true, false}) {
    CAPTURE(dies);
    const int port = find_free_port();
    auto out = run_ranks({0, 1, 2}, [&](int rank) -> std::string {
      Rendezvous rdv(opts(rank, 3, port, 1500ms));
      if (rank == 2) {
        if (dies) ::_exit(3);
        std::this_thread::sleep_for(2500ms);  // alive but stuck past rank 0's timeout
        return "slept";
      }
      rdv.gather("x", "loss record");
      rdv.broadcast(std::string("verdict"), "verdict");
      return "ok";
    });
    CHECK(out[0].find("rank 0: gather 'loss record' with rank 2 (127.0.0.1:") != std::string::npos);
    CHECK(out[0].find(dies ? "connection closed by the peer" : "timed out after 1.5 s") != std::string::npos);
    // Rank 1 waits for rank 0's broadcast; rank 0 gave up, so rank 1 learns it at once.
    CHECK(out[1].find("rank 1: broadcast 'verdict' with rank 0") != std::string::npos);
  }

  // Mismatched world sizes are refused at the handshake, on both sides.
  const int port = find_free_port();
  auto out = run_ranks({0, 1}, [&](int rank) -> std::string {
    Rendezvous rdv(opts(rank, rank == 0 ? 2 : 3, port, 3s));
    return "ok";
  });
  CHECK(out[0].find("rank 1 (127.0.0.1:") != std::string::npos);
  CHECK(out[0].find("has world size 3, rank 0 has 2") != std::string::npos);
  CHECK(out[1].find("rank 1: rank 0 refused the rendezvous") != std::string::npos);

  // A fixed-size broadcast with different sizes on different ranks.
  const int port2 = find_free_port();
  out = run_ranks({0, 1}, [&](int rank) -> std::string {
    Rendezvous rdv(opts(rank, 2, port2, 3s));
    std::vector<char> buf(rank == 0 ? 128 : 64);
    rdv.broadcast(buf.data(), buf.size(), "nccl unique id");
    return "ok";
  });
  CHECK(out[0] == "ok");
  CHECK(out[1].find("rank 0 sent 128 bytes, this rank expected 64") != std::string::npos);
}

TEST_CASE("distributed: startup agreement on config hash, world size and resume step") {
  CHECK(fnv1a64("") == 0xcbf29ce484222325ull);  // the published FNV-1a 64 test vectors
  CHECK(fnv1a64("a") == 0xaf63dc4c8601ec8cull);
  CHECK(fnv1a64("foobar") == 0x85944171f73967e8ull);
  StartupRecord a{fnv1a64("seed: 1\n"), 4, 100};
  CHECK(decode_startup_record(encode(a)) == a);
  CHECK_THROWS_AS(decode_startup_record("short"), CommError);
  CHECK(startup_disagreement({a, a, a, a}).empty());
  StartupRecord b = a, c = a;
  b.config_hash = fnv1a64("seed: 2\n");
  c.resume_step = 0;
  std::string msg = startup_disagreement({a, b, b, c});
  CHECK(msg.find("ranks disagree at startup") != std::string::npos);
  CHECK(msg.find(fmt::format(
            "config hash (FNV-1a of the resolved config): rank 0 has {:#018x}, ranks 1, 2 have {:#018x}",
            a.config_hash, b.config_hash)) != std::string::npos);
  CHECK(msg.find("resume step: rank 0 has 100, rank 3 has 0") != std::string::npos);
  CHECK(msg.find("world size:") == std::string::npos);  // only the differing fields are listed
  c.world_size = 2;
  CHECK(startup_disagreement({a, a, c}).find("world size: rank 0 has 4, rank 2 has 2") != std::string::npos);

  // Over the rendezvous: every rank gets the same verdict.
  for (bool agree : {true, false}) {
    const int port = find_free_port();
    auto out = run_ranks({0, 1, 2}, [&](int rank) -> std::string {
      Rendezvous rdv(opts(rank, 3, port));
      StartupRecord mine{fnv1a64("config"), 3, 50};
      if (!agree && rank == 2) mine.resume_step = 40;
      check_startup_agreement(rdv, mine);
      return "ok";
    });
    for (int r = 0; r < 3; ++r) {
      CAPTURE(r);
      if (agree) CHECK(out[r] == "ok");
      else CHECK(out[r].find(fmt::format("rank {}: ranks disagree at startup", r)) != std::string::npos);
      if (!agree) CHECK(out[r].find("resume step: rank 0 has 50, rank 2 has 40") != std::string::npos);
    }
  }
}

TEST_CASE("distributed: the watchdog aborts an operation that never completes") {
  int aborts = 0;
  auto t0 = Clock::now();
  CHECK_THROWS_WITH_AS(poll_with_timeout(
                           "all_reduce grads", 3, 100ms, [] { return false; }, [&] { ++aborts; }),
                       doctest::Contains("rank 3: collective 'all_reduce grads' did not complete within 0.1 s; "
                                         "communicator aborted"),
                       CommError);
  CHECK(aborts == 1);
  CHECK(seconds_since(t0) < 2);
  int polls = 0;
  poll_with_timeout(
      "fast", 0, 5s, [&] { return ++polls == 3; }, [&] { ++aborts; });
  CHECK((polls == 3 && aborts == 1));

  // Thread flavour: an op that blocks until aborted (as NCCL ops do on ncclCommAbort).
  auto released = std::make_shared<std::atomic<bool>>(false);
  t0 = Clock::now();
  try {
    run_with_timeout(
        "comm init", 1, 150ms,
        [released] {
          while (!*released) std::this_thread::sleep_for(1ms);
        },
        [released] { *released = true; });
    FAIL("no timeout");
  } catch (const CommError& e) {
    std::string m = e.what();
    CHECK(m.find("rank 1: collective 'comm init' did not complete within 0.15 s") != std::string::npos);
    CHECK(m.find("did not return after the abort") == std::string::npos);
  }
  CHECK(seconds_since(t0) < 2);
  // An op that ignores the abort is left behind (detached); the error says so. It ends on its own
  // after 2 s, holding only its own shared state.
  auto never = std::make_shared<std::atomic<bool>>(false);
  t0 = Clock::now();
  CHECK_THROWS_WITH_AS(run_with_timeout(
                           "barrier", 2, 100ms,
                           [never] {
                             for (auto end = Clock::now() + 2s; !*never && Clock::now() < end;)
                               std::this_thread::sleep_for(1ms);
                           },
                           [] {}, 50ms),
                       doctest::Contains("did not return after the abort either"), CommError);
  CHECK(seconds_since(t0) < 1.5);
  // Completion and errors pass through.
  bool ran = false;
  run_with_timeout(
      "ok", 0, 5s, [&] { ran = true; }, [] { FAIL("aborted"); });
  CHECK(ran);
  CHECK_THROWS_WITH_AS(run_with_timeout(
                           "bad", 0, 5s, [] { throw Error("nccl error 5"); }, [] {}),
                       "nccl error 5", Error);
}

TEST_CASE("distributed: --nproc launcher sets the environment and reports the first failure") {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / fmt::format("s6_launch_{}", ::getpid());
  fs::remove_all(dir);
  fs::create_directories(dir);
  auto sh = [](const std::string& script) {
    LocalLaunchOptions o;
    o.nproc = 3;
    o.argv = {"/bin/sh", "-c", script};
    o.grace = 300ms;
    return o;
  };
  auto t0 = Clock::now();
  CHECK(
      launch_local(sh("echo \"$RANK $LOCAL_RANK $WORLD_SIZE $LOCAL_WORLD_SIZE $MASTER_ADDR $MASTER_PORT\" > " +
                      dir.string() + "/env_$RANK")) == 0);
  std::string port;
  for (int r = 0; r < 3; ++r) {
    std::ifstream f(dir / fmt::format("env_{}", r));
    std::string rank, local, world, local_world, addr, p;
    f >> rank >> local >> world >> local_world >> addr >> p;
    CHECK((rank == std::to_string(r) && local == rank && world == "3" && local_world == "3" &&
           addr == "127.0.0.1"));
    CHECK((std::atoi(p.c_str()) > 0 && (port.empty() || p == port)));
    port = p;
  }
  // Each of the 3 workers gets a third of the cores as OpenMP threads, unless the user set them.
  const char* user_threads = std::getenv("OMP_NUM_THREADS");
  const std::string saved = user_threads ? user_threads : "";
  auto threads_seen = [&] {
    CHECK(launch_local(sh("echo $OMP_NUM_THREADS > " + dir.string() + "/omp_$RANK")) == 0);
    std::ifstream f(dir / "omp_1");
    std::string v;
    f >> v;
    return v;
  };
  unsetenv("OMP_NUM_THREADS");
  CHECK(threads_seen() == std::to_string(std::max(1u, std::max(1u, std::thread::hardware_concurrency()) / 3)));
  setenv("OMP_NUM_THREADS", "5", 1);
  CHECK(threads_seen() == "5");
  if (user_threads) setenv("OMP_NUM_THREADS", saved.c_str(), 1);
  else unsetenv("OMP_NUM_THREADS");
  // `exit $RANK`-style: only rank 2 fails; the others are terminated instead of waiting 30 s.
  CHECK(launch_local(sh("[ $RANK = 2 ] && exit 7; exec sleep 30")) == 7);
  // Workers that ignore SIGTERM are SIGKILLed after the grace period.
  CHECK(launch_local(sh("[ $RANK = 1 ] && exit 4; trap '' TERM; exec sleep 30")) == 4);
  // A stop code (the trainer's 5 after a checkpoint) does not terminate the others.
  CHECK(launch_local(sh("[ $RANK = 0 ] && exit 5; sleep 0.5; touch " + dir.string() + "/done_$RANK")) == 5);
  CHECK((fs::exists(dir / "done_1") && fs::exists(dir / "done_2")));
  CHECK(launch_local(sh("exit 0")) == 0);
  LocalLaunchOptions missing = sh("");
  missing.argv = {"/nonexistent/train"};
  CHECK(launch_local(missing) == 127);
  CHECK(seconds_since(t0) < 10);

  // SIGTERM to the launcher reaches every worker (each exits 9 on SIGTERM). The launcher runs in a
  // forked child so that the signal does not go to this test process.
  pid_t launcher = ::fork();
  REQUIRE(launcher >= 0);
  if (launcher == 0) {
    int rc = 1;
    try {
      rc = launch_local(
          sh("trap 'exit 9' TERM; touch " + dir.string() + "/ready_$RANK; while :; do sleep 0.05; done"));
    } catch (...) {
    }
    ::_exit(rc);
  }
  const auto deadline = Clock::now() + 10s;
  auto ready = [&] {
    return fs::exists(dir / "ready_0") && fs::exists(dir / "ready_1") && fs::exists(dir / "ready_2");
  };
  while (!ready() && Clock::now() < deadline) std::this_thread::sleep_for(10ms);
  CHECK(ready());
  ::kill(launcher, SIGTERM);
  int status = -1;
  while (::waitpid(launcher, &status, WNOHANG) != launcher) {
    if (Clock::now() >= deadline) {
      ::kill(launcher, SIGKILL);  // its workers get SIGTERM through PR_SET_PDEATHSIG
      ::waitpid(launcher, &status, 0);
      FAIL("the launcher did not stop after SIGTERM");
    }
    std::this_thread::sleep_for(10ms);
  }
  CHECK((WIFEXITED(status) && WEXITSTATUS(status) == 9));
  fs::remove_all(dir);
}

TEST_CASE("distributed: --nproc flag parsing and the current executable") {
  std::vector<std::string> args{"--config", "x.yaml", "--nproc", "4", "optim.lr=1e-3"};
  CHECK(take_nproc_flag(args, nullptr) == 4);
  CHECK(args == std::vector<std::string>{"--config", "x.yaml", "optim.lr=1e-3"});
  args = {"--nproc=2", "--config", "x.yaml"};
  CHECK(take_nproc_flag(args, nullptr) == 2);
  CHECK(args == std::vector<std::string>{"--config", "x.yaml"});
  CHECK(take_nproc_flag(args, "3") == 0);  // a worker without --nproc
  for (auto bad : {std::vector<std::string>{"--nproc"}, {"--nproc", "0"}, {"--nproc=two"}, {"--nproc", "2x"}})
    CHECK_THROWS_WITH_AS(take_nproc_flag(bad, nullptr), doctest::Contains("--nproc"), Error);
  args = {"--nproc", "2"};
  CHECK_THROWS_WITH_AS(take_nproc_flag(args, "1"), doctest::Contains("already has RANK=1"), Error);
  CHECK(std::filesystem::path(current_executable()).filename() == "s6_tests");
}

namespace {
std::vector<std::vector<int64_t>> bucket_params(const std::vector<GradientBucket>& buckets) {
  std::vector<std::vector<int64_t>> out;
  for (const GradientBucket& b : buckets) out.push_back(b.params);
  return out;
}
}  // namespace

TEST_CASE("distributed: gradient buckets fill in reverse parameter order up to the bucket size") {
  using P = std::vector<std::vector<int64_t>>;
  std::vector<GradientBucket> b = assign_gradient_buckets({10, 20, 30, 40}, 50);
  CHECK(bucket_params(b) == P{{3}, {2, 1}, {0}});  // 40 (+30 would pass 50), 30 + 20 = 50, 10
  REQUIRE(b.size() == 3);
  CHECK(b[0].bytes == 40);
  CHECK(b[1].bytes == 50);
  CHECK(b[2].bytes == 10);
  // A parameter larger than a bucket gets one of its own; the small ones around it are not merged
  // across it (that would break the reverse order).
  CHECK(bucket_params(assign_gradient_buckets({10, 200, 10, 10}, 50)) == P{{3, 2}, {1}, {0}});
  CHECK(bucket_params(assign_gradient_buckets({50, 50}, 50)) == P{{1}, {0}});  // exactly full
  CHECK(bucket_params(assign_gradient_buckets({1, 2, 3}, 1000)) == P{{2, 1, 0}});
  CHECK(assign_gradient_buckets({}, 50).empty());
  CHECK_THROWS_WITH_AS(assign_gradient_buckets({1}, 0), doctest::Contains("bucket size must be positive"),
                       Error);

  // Any sizes: every parameter once, in reverse order overall, no bucket over the size unless it
  // holds a single parameter.
  std::vector<int64_t> sizes;
  for (int64_t i = 0; i < 97; ++i) sizes.push_back((i * 7919) % 1000 + (i % 13 == 0 ? 5000 : 0));
  std::vector<int64_t> order;
  for (const GradientBucket& bucket : assign_gradient_buckets(sizes, 2500)) {
    int64_t bytes = 0;
    for (int64_t p : bucket.params) bytes += sizes[static_cast<size_t>(p)], order.push_back(p);
    CHECK(bytes == bucket.bytes);
    CHECK((bytes <= 2500 || bucket.params.size() == 1));
  }
  REQUIRE(order.size() == sizes.size());
  for (size_t i = 0; i < order.size(); ++i) CHECK(order[i] == static_cast<int64_t>(sizes.size() - 1 - i));
}

TEST_CASE("distributed: buckets launch in bucket order once all their gradients are final") {
  BucketSchedule s(assign_gradient_buckets({10, 10, 10, 10, 10}, 20), 5);  // {4, 3}, {2, 1}, {0}
  using L = std::vector<int64_t>;
  CHECK(s.mark_ready(1) == L{});
  CHECK(s.mark_ready(2) == L{});  // bucket 1 is complete but bucket 0 is not: it waits
  CHECK(s.mark_ready(2) == L{});  // a second report changes nothing
  CHECK(s.mark_ready(4) == L{});
  CHECK(s.mark_ready(3) == L{0, 1});
  CHECK(s.launched() == 2);
  CHECK(s.take_rest() == L{2});  // parameter 0 never became ready: launched at the end
  CHECK(s.take_rest() == L{});
  s.begin_step();
  CHECK_FALSE(s.is_ready(3));
  CHECK(s.mark_ready(4) == L{});
  CHECK(s.mark_ready(3) == L{0});
  CHECK(s.take_rest() == L{1, 2});
  CHECK_THROWS_WITH_AS(BucketSchedule(assign_gradient_buckets({1, 1}, 10), 3),
                       doctest::Contains("in no bucket"), Error);
}

TEST_CASE("distributed: on a real model backward finishes every bucket, the first long before the end") {
  MambaConfig c;
  c.n_layer = 3;
  MambaLM model(c, 11);
  std::vector<NamedParameter>& params = model.parameters();
  std::vector<int64_t> bytes;
  std::map<const AutogradMeta*, int64_t> index;
  for (size_t i = 0; i < params.size(); ++i) {
    bytes.push_back(params[i].tensor.numel() * 4);
    index[params[i].tensor.autograd_meta().get()] = static_cast<int64_t>(i);
  }
  BucketSchedule schedule(assign_gradient_buckets(bytes, 40000), static_cast<int64_t>(params.size()));
  const int64_t num_buckets = static_cast<int64_t>(schedule.buckets().size());
  REQUIRE(num_buckets >= 4);
  std::vector<int64_t> launched;
  std::vector<int64_t> fired_before;  // leaves reported final when each bucket launched
  int64_t fired = 0;
  const int64_t batch = 2, length = 8, vocab = c.padded_vocab();
  Tensor ids = Tensor::from_vector<int64_t>(std::vector<int64_t>(batch * length, 3), {batch, length});
  Tensor targets = Tensor::from_vector<int64_t>(std::vector<int64_t>(batch * length, 5), {batch * length});
  Tensor loss = cross_entropy(reshape(model.forward(ids), {batch * length, vocab}), targets);
  autograd::backward(loss, Tensor(), [&](const AutogradMeta& leaf) {
    ++fired;
    for (int64_t b : schedule.mark_ready(index.at(&leaf))) launched.push_back(b), fired_before.push_back(fired);
  });
  CHECK(fired == static_cast<int64_t>(params.size()));  // every parameter's gradient was reported
  CHECK(schedule.take_rest().empty());                  // so nothing was left for the end
  REQUIRE(static_cast<int64_t>(launched.size()) == num_buckets);
  for (int64_t b = 0; b < num_buckets; ++b) CHECK(launched[static_cast<size_t>(b)] == b);
  CHECK(fired_before[0] < fired / 2);  // the first bucket went out while most of backward remained
  for (const NamedParameter& p : params) CHECK(p.tensor.grad().defined());
}
