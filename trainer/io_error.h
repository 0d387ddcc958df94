// Failures to write or read the run directory (config.yaml, metrics.jsonl, checkpoints, the lock):
// exit code 4, the message naming the path and the operating system's error text.
#pragma once
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>

namespace s6::trainer {

struct IoError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// "cannot <action> <path>: <strerror(err)>"
[[noreturn]] inline void throw_io(const std::string& action, const std::string& path, int err) {
  throw IoError("cannot " + action + " " + path + ": " + std::strerror(err));
}

}  // namespace s6::trainer
