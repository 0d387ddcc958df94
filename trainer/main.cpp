// `train`: parses the command line, loads the config and runs training; every way out is one of
// the exit codes in trainer/exit_codes.h.
#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include "core/error.h"
#include "core/log.h"
#include "trainer/checkpoint.h"
#include "trainer/config.h"
#include "trainer/data_parallel.h"
#include "trainer/dist/env.h"
#include "trainer/dist/error.h"
#include "trainer/dist/launch.h"
#include "trainer/exit_codes.h"
#include "trainer/exit_report.h"
#include "trainer/io_error.h"
#include "trainer/omp_defaults.h"
#include "trainer/run_start.h"
#include "trainer/signals.h"
#include "trainer/trainer.h"

namespace {

const char* kUsage =
    "usage: train --config FILE [key=value ...] [--print-config] [--resume auto|never|PATH] [--overwrite]\n"
    "             [--allow-config-change] [--nproc N]\n"
    "  key=value     override a config key, e.g. optim.lr=1e-3 train.steps=2000 device=cpu\n"
    "  --print-config  print the resolved config (YAML) and exit\n"
    "  --resume      auto (default): newest valid checkpoint in run.dir, else a fresh start;\n"
    "                never: always start fresh; PATH: that checkpoint or fail\n"
    "  --overwrite   let a fresh start (or --resume PATH) delete the checkpoints of another run in\n"
    "                run.dir (or the newer ones) instead of refusing\n"
    "  --allow-config-change  resume even though data, seed or model keys differ from the checkpoint's\n"
    "  --nproc N     start N worker processes on this node, one per GPU (data parallelism; with\n"
    "                device=cpu, N CPU processes);\n"
    "                under torchrun or srun the launcher's environment is read instead\n";

struct Cli {
  std::string config;
  std::vector<std::string> overrides;
  bool print_config = false;
  std::string resume = "auto";
  bool overwrite = false;
  bool allow_config_change = false;
};

// Returns an error message, or "" when the arguments parse.
std::string parse(int argc, char** argv, Cli& cli) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&](const char* flag) -> std::string {
      if (i + 1 >= argc) throw std::runtime_error(fmt::format("{} needs a value", flag));
      return argv[++i];
    };
    if (a == "--config") cli.config = value("--config");
    else if (a.rfind("--config=", 0) == 0) cli.config = a.substr(9);
    else if (a == "--print-config") cli.print_config = true;
    else if (a == "--resume") cli.resume = value("--resume");
    else if (a.rfind("--resume=", 0) == 0) cli.resume = a.substr(9);
    else if (a == "--overwrite") cli.overwrite = true;
    else if (a == "--allow-config-change") cli.allow_config_change = true;
    else if (a.rfind("--", 0) == 0) return fmt::format("unknown option '{}'", a);
    else if (a.find('=') != std::string::npos) cli.overrides.push_back(a);
    else return fmt::format("unexpected argument '{}' (overrides look like key=value)", a);
  }
  if (cli.config.empty()) return "--config FILE is required";
  return "";
}

}  // namespace

// A function-try-block: an error while reporting an error (stdout or stderr on a full disk makes
// fmt::print throw) still ends in an exit code, never in std::terminate.
int main(int argc, char** argv) try {
  using namespace s6::trainer;
  apply_openmp_defaults(argv);  // first: it may execute this program again
  install_stop_handlers();      // first: a signal during start-up is a clean stop too (exit 5)
  if (argc == 2 && (!std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h"))) {
    fmt::print("{}", kUsage);
    return kExitOk;
  }
  // Built-in launcher: re-run this program N times with the torchrun variables set.
  std::vector<std::string> args(argv + 1, argv + argc);
  try {
    if (int nproc = take_nproc_flag(args, std::getenv("RANK")); nproc > 0) {
      LocalLaunchOptions launch;
      launch.nproc = nproc;
      launch.argv.push_back(current_executable());
      launch.argv.insert(launch.argv.end(), args.begin(), args.end());
      return launch_local(launch);
    }
  } catch (const std::exception& e) {
    fmt::print(stderr, "train: {}\n", e.what());
    return kExitConfigError;
  }
  Cli cli;
  try {
    std::string err = parse(argc, argv, cli);
    if (!err.empty()) {
      fmt::print(stderr, "train: {}\n{}", err, kUsage);
      return kExitConfigError;
    }
  } catch (const std::exception& e) {
    fmt::print(stderr, "train: {}\n{}", e.what(), kUsage);
    return kExitConfigError;
  }
  try {
    LaunchEnv env = launch_env_from_process();
    TrainConfig config = load_config(cli.config, cli.overrides, env.world_size);
    if (cli.print_config) {
      fmt::print("{}", to_yaml(config));
      return kExitOk;
    }
    RunOptions options;
    options.config_path = cli.config;
    options.resume = cli.resume;
    options.overwrite = cli.overwrite;
    options.allow_config_change = cli.allow_config_change;
    options.rank = env.rank;
    options.world_size = env.world_size;
    std::unique_ptr<DataParallel> data_parallel;
    if (env.launcher != Launcher::None) {  // any launcher, world size 1 included: one code path
      if (env.rank == 0) s6::log::info("launch: {}", describe(env));
      data_parallel = std::make_unique<DataParallel>(env, std::chrono::minutes(5),
                                                     resolve_device(config.device));
      options.data_parallel = data_parallel.get();
    }
    return run_training(config, options);
  } catch (...) {
    return report_exception("train");
  }
} catch (const std::system_error& e) {
  std::fprintf(stderr, "train: I/O error: %s\n", e.what());
  return s6::trainer::kExitCheckpointError;
} catch (const std::exception& e) {
  std::fprintf(stderr, "train: unexpected error: %s\n", e.what());
  return s6::trainer::kExitInternalError;
}
