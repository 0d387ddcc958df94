// Logging through fmt: one line per message, with a level tag, to stderr (progress goes to stdout).
#pragma once
#include <fmt/format.h>

#include <string>

namespace s6::log {

enum class Level { Debug, Info, Warn, Error };

void set_level(Level level);
Level level();
void write(Level level, const std::string& message);

template <typename... Args> void info(fmt::format_string<Args...> f, Args&&... args) {
  if (level() <= Level::Info) write(Level::Info, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args> void warn(fmt::format_string<Args...> f, Args&&... args) {
  if (level() <= Level::Warn) write(Level::Warn, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args> void error(fmt::format_string<Args...> f, Args&&... args) {
  write(Level::Error, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args> void debug(fmt::format_string<Args...> f, Args&&... args) {
  if (level() <= Level::Debug) write(Level::Debug, fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace s6::log
