// The one exception type of the engine. Every message names the operation (and usually the
// shapes) that failed, so a user can see where a problem came from without a debugger.
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace tg {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

}  // namespace tg

// TG_CHECK(cond, fmt-format, args...): throws tg::Error with the formatted message when cond is false.
// This header pulls in fmt, so it is for .cpp files only: fmt stays out of nvcc-compiled code.
#define TG_CHECK(cond, ...)                                  \
  do {                                                       \
    if (!(cond)) throw ::tg::Error(::fmt::format(__VA_ARGS__)); \
  } while (0)
