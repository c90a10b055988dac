// PCRE2 (UTF + UCP, JIT where available) with the semantics the Rust tokenizers get from
// Oniguruma: \s is White_Space, \w is letters/marks/numbers/connector punctuation, \h is a hex
// digit, ^ and $ match at line breaks.
#pragma once
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace lw::tok {

struct Match {
  size_t start, end;  // byte offsets
};

class Regex {
 public:
  // Throws std::runtime_error with PCRE2's message when the pattern does not compile.
  explicit Regex(const std::string& onig_pattern);
  Regex(Regex&&) noexcept;
  Regex& operator=(Regex&&) noexcept;
  ~Regex();

  // All non-overlapping matches, left to right (after an empty match the search moves on one
  // character). `text` must be valid UTF-8.
  void find_all(std::string_view text, std::vector<Match>& out) const;

  // Oniguruma syntax -> PCRE2 syntax (exposed for tests).
  static std::string translate(const std::string& onig_pattern);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace lw::tok
