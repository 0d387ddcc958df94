// Errors: one exception type, and check macros whose messages name the op, shapes and dtypes.
#pragma once
#include <fmt/format.h>
#include <stdexcept>
#include <string>

namespace s6 {

// Thrown for every violated precondition; the message is meant for the user as is.
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

[[noreturn]] void throw_error(const char* file, int line, const std::string& message);

}  // namespace s6

// S6_CHECK(cond, fmt, args...): throws s6::Error "<message> [file:line]" when cond is false.
#define S6_CHECK(cond, ...)                                                       \
  do {                                                                            \
    if (!(cond)) ::s6::throw_error(__FILE__, __LINE__, fmt::format(__VA_ARGS__)); \
  } while (0)

#define S6_FAIL(...) ::s6::throw_error(__FILE__, __LINE__, fmt::format(__VA_ARGS__))
