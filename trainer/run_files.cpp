// checkpoints/ and config.yaml in run.dir (trainer/run_files.h).
#include "trainer/run_files.h"

#include <cstdio>
#include <filesystem>
#include <system_error>

#include "trainer/io_error.h"

namespace s6::trainer {

namespace fs = std::filesystem;

void create_run_files(const TrainConfig& config, const std::string& checkpoint_dir) {
  std::error_code ec;
  fs::create_directories(checkpoint_dir, ec);
  if (ec) throw_io("create", checkpoint_dir, ec.value());
  const std::string path = (fs::path(config.run_dir) / "config.yaml").string();
  const std::string tmp = path + ".tmp";
  const std::string text = to_yaml(config);
  std::FILE* f = std::fopen(tmp.c_str(), "w");
  if (!f) throw_io("create", tmp, errno);
  errno = 0;
  const bool written = std::fwrite(text.data(), 1, text.size(), f) == text.size() && std::fflush(f) == 0;
  const int err = errno ? errno : EIO;
  if (std::fclose(f) != 0 || !written) {
    std::remove(tmp.c_str());
    throw_io("write", tmp, written ? errno : err);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) throw_io("replace", path, errno);
}

}  // namespace s6::trainer
