// Jinja2's lexer with transformers' settings: trim_blocks (a newline right after a block or
// comment tag is dropped), lstrip_blocks (spaces and tabs before a block or comment tag on its own
// line are dropped), "-" (strip all whitespace on that side) and "+" (keep it) modifiers, newlines
// normalised to "\n" and one trailing newline of the source dropped (keep_trailing_newline=False).
#include <cstring>

#include "chat/jinja.h"

namespace lw::chat::jinja {
namespace {

const char* const kOperators[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~",
                                  "<",  ">",  "=",  ".",  ",",  ":", "|", "(", ")", "[", "]", "{",
                                  "}",  ";"};

bool is_name_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_ascii_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

// Whitespace as Python's str.isspace / regex \s sees it, on UTF-8 text.
size_t rstrip_len(const std::string& s) {  // length of s without trailing whitespace
  std::u32string u = utf32(s);
  size_t n = u.size();
  while (n > 0 && is_space(u[n - 1])) --n;
  return utf8(u.substr(0, n)).size();
}
size_t lspace_len(const std::string& s, size_t from) {  // whitespace bytes starting at from
  std::u32string u = utf32(s.substr(from));
  size_t n = 0;
  while (n < u.size() && is_space(u[n])) ++n;
  return utf8(u.substr(0, n)).size();
}

void append_utf8(std::string& out, uint32_t cp) { out += utf8(std::u32string(1, static_cast<char32_t>(cp))); }

// Python's "unicode-escape" decoding, which Jinja applies to string literals.
std::string unescape(const std::string& raw, int line) {
  std::string out;
  for (size_t i = 0; i < raw.size(); ++i) {
    if (raw[i] != '\\' || i + 1 == raw.size()) {
      out += raw[i];
      continue;
    }
    char c = raw[++i];
    auto hex = [&](int digits) {
      if (i + static_cast<size_t>(digits) >= raw.size())
        error("line " + std::to_string(line) + ": truncated \\" + std::string(1, c) + " escape in a string");
      uint32_t v = 0;
      for (int k = 0; k < digits; ++k) {
        char h = raw[++i];
        int d = is_digit(h) ? h - '0' : (h >= 'a' && h <= 'f') ? h - 'a' + 10 : (h >= 'A' && h <= 'F') ? h - 'A' + 10 : -1;
        if (d < 0) error("line " + std::to_string(line) + ": bad \\" + std::string(1, c) + " escape in a string");
        v = v * 16 + static_cast<uint32_t>(d);
      }
      if (v > 0x10FFFF) error("line " + std::to_string(line) + ": escape out of range in a string");
      append_utf8(out, v);
    };
    switch (c) {
      case '\n': break;  // line continuation
      case '\\': out += '\\'; break;
      case '\'': out += '\''; break;
      case '"': out += '"'; break;
      case 'a': out += '\a'; break;
      case 'b': out += '\b'; break;
      case 'f': out += '\f'; break;
      case 'n': out += '\n'; break;
      case 'r': out += '\r'; break;
      case 't': out += '\t'; break;
      case 'v': out += '\v'; break;
      case 'x': hex(2); break;
      case 'u': hex(4); break;
      case 'U': hex(8); break;
      case 'N': error("line " + std::to_string(line) + ": unsupported \\N{...} escape in a string");
      default:
        if (c >= '0' && c <= '7') {
          uint32_t v = static_cast<uint32_t>(c - '0');
          for (int k = 0; k < 2 && i + 1 < raw.size() && raw[i + 1] >= '0' && raw[i + 1] <= '7'; ++k)
            v = v * 8 + static_cast<uint32_t>(raw[++i] - '0');
          append_utf8(out, v);
        } else {
          out += '\\';  // unknown escapes stay as they are
          out += c;
        }
    }
  }
  return out;
}

class Lexer {
 public:
  explicit Lexer(const std::string& source) {
    // Normalise \r\n and \r to \n, then drop one trailing newline.
    for (size_t i = 0; i < source.size(); ++i) {
      if (source[i] == '\r') {
        src_ += '\n';
        if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
      } else {
        src_ += source[i];
      }
    }
    if (!src_.empty() && src_.back() == '\n') src_.pop_back();
  }

  std::vector<Token> run() {
    bool line_starting = true;  // the previous match ended with a newline (or we are at the start)
    while (pos_ <= src_.size()) {
      size_t tag = find_tag(pos_);
      std::string text = src_.substr(pos_, (tag == std::string::npos ? src_.size() : tag) - pos_);
      if (tag != std::string::npos) {
        char kind = src_[tag + 1];  // '{', '%' or '#'
        char sign = tag + 2 < src_.size() ? src_[tag + 2] : 0;
        if (sign == '-') {
          text.resize(rstrip_len(text));
        } else if (sign != '+' && kind != '{') {  // lstrip_blocks
          size_t l_pos = text.rfind('\n');
          l_pos = l_pos == std::string::npos ? 0 : l_pos + 1;
          if ((l_pos > 0 || line_starting) && l_pos < text.size() && lspace_len(text, l_pos) == text.size() - l_pos)
            text.resize(l_pos);
        }
      }
      emit_text(text);
      if (tag == std::string::npos) break;
      pos_ = tag;
      line_starting = lex_tag();
    }
    out_.push_back({Tok::Eof, "", 0, 0, line_});
    return std::move(out_);
  }

 private:
  std::string src_;
  size_t pos_ = 0;
  int line_ = 1;
  std::vector<Token> out_;

  [[noreturn]] void fail(const std::string& what) { error("line " + std::to_string(line_) + ": " + what); }

  size_t find_tag(size_t from) const {
    for (size_t i = src_.find('{', from); i != std::string::npos; i = src_.find('{', i + 1))
      if (i + 1 < src_.size() && (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#')) return i;
    return std::string::npos;
  }

  void emit_text(const std::string& text) {
    if (!text.empty()) out_.push_back({Tok::Text, text, 0, 0, line_});
    advance_lines(text);
  }
  void advance_lines(const std::string& s) {
    for (char c : s) line_ += c == '\n';
  }
  void skip(size_t n) {  // consume n source characters, counting lines
    advance_lines(src_.substr(pos_, n));
    pos_ += n;
  }

  // After a closing delimiter: "-" strips all following whitespace, trim_blocks drops one
  // newline after a block or comment tag, "+" keeps everything. Returns whether the consumed
  // text ends with a newline (lstrip_blocks' "line starting" state).
  bool after_close(char sign, bool is_block) {
    if (sign == '-') {
      size_t n = lspace_len(src_, pos_);
      bool nl = n > 0 && src_[pos_ + n - 1] == '\n';
      skip(n);
      return nl;
    }
    if (sign != '+' && is_block && pos_ < src_.size() && src_[pos_] == '\n') {
      skip(1);
      return true;
    }
    return false;
  }

  // pos_ is at "{{", "{%" or "{#". Returns the line_starting state after the tag.
  bool lex_tag() {
    char kind = src_[pos_ + 1];
    skip(2);
    if (pos_ < src_.size() && (src_[pos_] == '-' || src_[pos_] == '+')) skip(1);
    if (kind == '#') {
      if (pos_ == src_.size()) return false;  // Jinja accepts a "{#" that ends the template
      size_t end = src_.find("#}", pos_);
      if (end == std::string::npos) fail("unclosed comment");
      char sign = end > pos_ && (src_[end - 1] == '-' || src_[end - 1] == '+') ? src_[end - 1] : 0;
      skip(end + 2 - pos_);
      return after_close(sign, true);
    }
    bool block = kind == '%';
    out_.push_back({block ? Tok::BlockBegin : Tok::VarBegin, "", 0, 0, line_});
    if (block) reject_raw();
    int depth = 0;  // open brackets: a closing delimiter only counts outside them
    for (;;) {
      while (pos_ < src_.size() && is_ascii_space(src_[pos_])) skip(1);
      if (pos_ >= src_.size()) fail(block ? "unclosed block tag: missing '%}'" : "unclosed expression: missing '}}'");
      if (depth == 0) {
        const char* close = block ? "%}" : "}}";
        char sign = 0;
        size_t at = pos_;
        if ((src_[at] == '-' || (block && src_[at] == '+')) && src_.compare(at + 1, 2, close) == 0) sign = src_[at++];
        if (src_.compare(at, 2, close) == 0) {
          out_.push_back({block ? Tok::BlockEnd : Tok::VarEnd, "", 0, 0, line_});
          skip(at + 2 - pos_);
          return after_close(sign, block);
        }
      }
      lex_token(depth);
    }
  }

  void reject_raw() {
    size_t p = pos_;
    while (p < src_.size() && is_ascii_space(src_[p])) ++p;
    if (src_.compare(p, 3, "raw") == 0 && (p + 3 >= src_.size() || !(is_name_start(src_[p + 3]) || is_digit(src_[p + 3]))))
      fail("unsupported construct: {% raw %} blocks");
  }

  void lex_token(int& depth) {
    char c = src_[pos_];
    int line = line_;
    if (is_name_start(c)) {
      size_t e = pos_;
      while (e < src_.size() && (is_name_start(src_[e]) || is_digit(src_[e]))) ++e;
      out_.push_back({Tok::Name, src_.substr(pos_, e - pos_), 0, 0, line});
      skip(e - pos_);
    } else if (is_digit(c)) {
      lex_number();
    } else if (c == '\'' || c == '"') {
      size_t e = pos_ + 1;
      while (e < src_.size() && src_[e] != c) e += src_[e] == '\\' ? 2 : 1;
      if (e >= src_.size()) fail("unterminated string literal");
      std::string value = unescape(src_.substr(pos_ + 1, e - pos_ - 1), line);
      skip(e + 1 - pos_);
      out_.push_back({Tok::String, value, 0, 0, line});
    } else {
      for (const char* op : kOperators) {
        size_t n = std::strlen(op);
        if (src_.compare(pos_, n, op) != 0) continue;
        if (op[0] == '(' || op[0] == '[' || op[0] == '{') ++depth;
        if ((op[0] == ')' || op[0] == ']' || op[0] == '}') && depth > 0) --depth;
        out_.push_back({Tok::Op, op, 0, 0, line});
        skip(n);
        return;
      }
      fail(std::string("unexpected character '") + c + "' in a tag");
    }
  }

  void lex_number() {
    size_t e = pos_;
    auto digits = [&] {  // digits with single underscores between them
      while (e < src_.size() && (is_digit(src_[e]) || (src_[e] == '_' && e + 1 < src_.size() && is_digit(src_[e + 1])))) ++e;
    };
    digits();
    bool is_float = false;
    if (e + 1 < src_.size() && src_[e] == '.' && is_digit(src_[e + 1])) {
      ++e;
      digits();
      is_float = true;
    }
    if (e < src_.size() && (src_[e] == 'e' || src_[e] == 'E')) {
      size_t x = e + 1;
      if (x < src_.size() && (src_[x] == '+' || src_[x] == '-')) ++x;
      if (x < src_.size() && is_digit(src_[x])) {
        e = x;
        digits();
        is_float = true;
      }
    }
    std::string text;
    for (size_t i = pos_; i < e; ++i)
      if (src_[i] != '_') text += src_[i];
    Token t{is_float ? Tok::Float : Tok::Int, text, 0, 0, line_};
    try {
      if (is_float) t.float_value = std::stod(text);
      else t.int_value = std::stoll(text);
    } catch (const std::exception&) {
      fail("number out of range: " + text);
    }
    out_.push_back(t);
    skip(e - pos_);
  }
};

}  // namespace

std::vector<Token> lex(const std::string& source) { return Lexer(source).run(); }

}  // namespace lw::chat::jinja
