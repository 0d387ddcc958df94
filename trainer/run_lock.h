// An exclusive lock on run.dir (flock on run.dir/train.lock, released by the kernel on any exit),
// so two runs never write the same metrics and checkpoints.
#pragma once
#include <string>

namespace s6::trainer {

class RunDirLock {
 public:
  // Creates run_dir if needed and takes the lock. Throws ConfigError when run.dir is not a
  // directory or another process holds the lock (naming its pid), IoError when the directory or
  // the lock file cannot be created (path and OS error).
  explicit RunDirLock(const std::string& run_dir);
  ~RunDirLock();
  RunDirLock(const RunDirLock&) = delete;
  RunDirLock& operator=(const RunDirLock&) = delete;

 private:
  int fd_ = -1;
};

}  // namespace s6::trainer
