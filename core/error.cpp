// Builds the text of s6::Error so every check reports where it fired.
#include "core/error.h"

#include <cstring>

namespace s6 {

void throw_error(const char* file, int line, const std::string& message) {
  const char* base = std::strrchr(file, '/');
  throw Error(fmt::format("{} [{}:{}]", message, base ? base + 1 : file, line));
}

}  // namespace s6
