// Errors the user can act on: every message names the file (when there is one) and the problem.
#pragma once
#include <stdexcept>
#include <string>

namespace lw {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// "PATH: problem"
[[noreturn]] void fail(const std::string& path, const std::string& problem);
[[noreturn]] void fail(const std::string& problem);

}  // namespace lw
