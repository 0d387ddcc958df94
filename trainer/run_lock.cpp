// run.dir/train.lock: flock(LOCK_EX | LOCK_NB), the holder's pid and host written into it.
#include "trainer/run_lock.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/file.h>
#include <unistd.h>

#include <filesystem>
#include <system_error>

#include "trainer/config.h"
#include "trainer/io_error.h"

namespace s6::trainer {

namespace fs = std::filesystem;

RunDirLock::RunDirLock(const std::string& run_dir) {
  std::error_code ec;
  if (fs::exists(run_dir, ec) && !fs::is_directory(run_dir, ec))
    throw ConfigError(fmt::format("run.dir: {} exists and is not a directory", run_dir));
  fs::create_directories(run_dir, ec);
  if (ec) throw_io("create run.dir", run_dir, ec.value());
  const std::string path = (fs::path(run_dir) / "train.lock").string();
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) throw_io("create the lock file", path, errno);
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    char buf[256] = {};
    ssize_t n = ::pread(fd_, buf, sizeof(buf) - 1, 0);
    ::close(fd_);
    fd_ = -1;
    if (err != EWOULDBLOCK) throw_io("lock", path, err);
    std::string holder = n > 0 ? std::string(buf, static_cast<size_t>(n)) : "an unknown process";
    while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' ')) holder.pop_back();
    throw ConfigError(
        fmt::format("run.dir: {} is in use by another train process ({}; lock file {}); wait "
                    "for it to finish, stop it, or choose another run.dir",
                    run_dir, holder, path));
  }
  char host[128] = {};
  ::gethostname(host, sizeof(host) - 1);
  const std::string text = fmt::format("pid {} on {}\n", ::getpid(), host);
  if (::ftruncate(fd_, 0) != 0 ||
      ::pwrite(fd_, text.data(), text.size(), 0) != static_cast<ssize_t>(text.size())) {
    const int err = errno;
    ::close(fd_);
    throw_io("write the lock file", path, err);
  }
}

RunDirLock::~RunDirLock() {
  if (fd_ >= 0) ::close(fd_);  // closing the only descriptor releases the flock
}

}  // namespace s6::trainer
