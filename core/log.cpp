// Log sink: stderr, one flushed line per message; the level comes from S6_LOG_LEVEL if set.
#include "core/log.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

namespace s6::log {

namespace {
Level initial_level() {
  const char* env = std::getenv("S6_LOG_LEVEL");
  if (!env) return Level::Info;
  if (!std::strcmp(env, "debug")) return Level::Debug;
  if (!std::strcmp(env, "warn")) return Level::Warn;
  if (!std::strcmp(env, "error")) return Level::Error;
  return Level::Info;
}
Level g_level = initial_level();
std::mutex g_mutex;
}  // namespace

void set_level(Level l) { g_level = l; }
Level level() { return g_level; }

void write(Level l, const std::string& message) {
  static const char* tags[] = {"debug", "info", "warn", "error"};
  std::lock_guard<std::mutex> lock(g_mutex);
  fmt::print(stderr, "[s6 {}] {}\n", tags[static_cast<int>(l)], message);
  std::fflush(stderr);
}

}  // namespace s6::log
