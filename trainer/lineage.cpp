// Run ids and the start-up check against other runs' checkpoints (trainer/lineage.h).
#include "trainer/lineage.h"

#include <fmt/format.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <random>

#include "core/log.h"
#include "trainer/config.h"
#include "trainer/io_error.h"

namespace s6::trainer {

namespace fs = std::filesystem;

std::string new_run_id() {
  std::random_device rd;
  std::seed_seq seq{rd(), rd(), static_cast<unsigned>(::getpid()),
                    static_cast<unsigned>(std::chrono::system_clock::now().time_since_epoch().count())};
  std::mt19937_64 gen(seq);
  return fmt::format("{:016x}", gen());
}

void settle_lineage(const std::string& checkpoint_dir, const std::string& run_dir,
                    const CheckpointContents* resumed, const std::string& mode, bool overwrite) {
  if (resumed && mode == "auto") return;
  std::vector<std::string> in_the_way;
  for (const auto& [step, path] : list_checkpoints(checkpoint_dir)) {
    if (!resumed) {
      in_the_way.push_back(path);
    } else if (step > resumed->meta.step && !fs::equivalent(path, resumed->path)) {
      in_the_way.push_back(path);
    }
  }
  if (in_the_way.empty()) return;
  std::string names;
  for (const std::string& p : in_the_way)
    names += (names.empty() ? "" : ", ") + fs::path(p).filename().string();
  if (!overwrite) {
    const std::string what =
        resumed ? fmt::format(
                      "resuming from step {} ({}) would leave newer checkpoints ({}) that a later --resume "
                      "auto would pick",
                      resumed->meta.step, resumed->path, names)
                : fmt::format(
                      "a fresh start would mix with the checkpoints already there ({}), of an earlier "
                      "run or unusable (see above)",
                      names);
    throw ConfigError(fmt::format("run.dir: {}: {}; pass --overwrite to delete them, or choose another run.dir",
                                  run_dir, what));
  }
  for (const std::string& p : in_the_way) {
    std::error_code ec;
    fs::remove(p, ec);
    if (ec) throw_io("delete", p, ec.value());
    log::warn("--overwrite: deleted {}", p);
  }
}

}  // namespace s6::trainer
