#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer/regex.h"

#include <pcre2.h>

#include <stdexcept>

#include "tokenizer/unicode.h"

namespace lw::tok {

namespace {

constexpr const char* kSpaceClass = "\\t-\\r\\x{85}\\p{Z}";
constexpr const char* kWordClass = "\\p{L}\\p{M}\\p{N}\\p{Pc}";
constexpr const char* kHexClass = "0-9a-fA-F";

// One JIT stack and match data per thread, grown on demand.
struct ThreadScratch {
  pcre2_jit_stack* stack = nullptr;
  pcre2_match_context* context = nullptr;
  pcre2_match_data* data = nullptr;
  ~ThreadScratch() {
    if (data) pcre2_match_data_free(data);
    if (context) pcre2_match_context_free(context);
    if (stack) pcre2_jit_stack_free(stack);
  }
};

ThreadScratch& scratch() {
  thread_local ThreadScratch s;
  if (!s.data) {
    s.data = pcre2_match_data_create(16, nullptr);
    s.context = pcre2_match_context_create(nullptr);
    s.stack = pcre2_jit_stack_create(64 * 1024, 8 * 1024 * 1024, nullptr);
    if (s.context && s.stack) pcre2_jit_stack_assign(s.context, nullptr, s.stack);
  }
  return s;
}

}  // namespace

struct Regex::Impl {
  pcre2_code* code = nullptr;
  bool jit = false;
  ~Impl() {
    if (code) pcre2_code_free(code);
  }
};

std::string Regex::translate(const std::string& p) {
  std::string out;
  out.reserve(p.size() + 16);
  int class_depth = 0;  // inside [...] (nested classes count)
  for (size_t i = 0; i < p.size(); ++i) {
    char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      char n = p[i + 1];
      const char* positive = nullptr;
      bool negated = false;
      switch (n) {
        case 's': positive = kSpaceClass; break;
        case 'S': positive = kSpaceClass; negated = true; break;
        case 'w': positive = kWordClass; break;
        case 'W': positive = kWordClass; negated = true; break;
        case 'h': positive = kHexClass; break;
        case 'H': positive = kHexClass; negated = true; break;
        default: break;
      }
      if (positive && class_depth == 0) {
        out += negated ? "[^" : "[";
        out += positive;
        out += ']';
        ++i;
        continue;
      }
      if (positive && !negated) {
        out += positive;
        ++i;
        continue;
      }
      // Any other escape (or a negated class escape inside a class): copy both characters,
      // including a \p{...} or \x{...} body which contains no special characters.
      out += c;
      out += n;
      ++i;
      continue;
    }
    if (class_depth > 0 && c == '[' && i + 1 < p.size() && p[i + 1] == ':') {
      size_t close = p.find(":]", i + 2);
      if (close != std::string::npos) {
        out.append(p, i, close + 2 - i);
        i = close + 1;
        continue;
      }
    }
    if (c == '[') {
      ++class_depth;
      out += c;
      // A ']' right after '[' or '[^' is a literal.
      if (i + 1 < p.size() && p[i + 1] == '^') {
        out += '^';
        ++i;
      }
      if (i + 1 < p.size() && p[i + 1] == ']') {
        out += "\\]";
        ++i;
      }
      continue;
    }
    if (c == ']' && class_depth > 0) --class_depth;
    out += c;
  }
  return out;
}

Regex::Regex(const std::string& onig_pattern) : impl_(std::make_unique<Impl>()) {
  std::string pattern = translate(onig_pattern);
  int error = 0;
  PCRE2_SIZE offset = 0;
  impl_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                              PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE, &error, &offset, nullptr);
  if (!impl_->code) {
    PCRE2_UCHAR buffer[256];
    pcre2_get_error_message(error, buffer, sizeof buffer);
    throw std::runtime_error("regex " + onig_pattern + " does not compile: " +
                             reinterpret_cast<const char*>(buffer) + " at offset " + std::to_string(offset));
  }
  impl_->jit = pcre2_jit_compile(impl_->code, PCRE2_JIT_COMPLETE) == 0;
}

Regex::Regex(Regex&&) noexcept = default;
Regex& Regex::operator=(Regex&&) noexcept = default;
Regex::~Regex() = default;

void Regex::find_all(std::string_view text, std::vector<Match>& out) const {
  ThreadScratch& s = scratch();
  auto subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t pos = 0;
  size_t last_match_end = std::string_view::npos;
  while (pos <= text.size()) {
    int rc = impl_->jit ? pcre2_jit_match(impl_->code, subject, text.size(), pos, PCRE2_NO_UTF_CHECK, s.data, s.context)
                        : pcre2_match(impl_->code, subject, text.size(), pos, PCRE2_NO_UTF_CHECK, s.data, s.context);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      PCRE2_UCHAR buffer[256];
      pcre2_get_error_message(rc, buffer, sizeof buffer);
      throw std::runtime_error(std::string("regex match failed: ") + reinterpret_cast<const char*>(buffer));
    }
    PCRE2_SIZE* ov = pcre2_get_ovector_pointer(s.data);
    size_t start = ov[0], end = ov[1];
    // As Oniguruma's iterator: an empty match right where the previous match ended is not
    // reported; the search moves on one character.
    if (end == start && start == last_match_end) {
      if (end >= text.size()) break;
      pos = end + utf8_len(static_cast<unsigned char>(text[end]));
      continue;
    }
    out.push_back({start, end});
    last_match_end = end;
    if (end > start) {
      pos = end;
    } else {
      if (end >= text.size()) break;
      pos = end + utf8_len(static_cast<unsigned char>(text[end]));
    }
  }
}

}  // namespace lw::tok
