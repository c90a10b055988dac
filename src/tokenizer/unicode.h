// UTF-8 and Unicode helpers for the tokenizer (private to src/tokenizer).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace lw::tok {

// Length of the valid UTF-8 prefix of `text` (== text.size() when all of it is valid, as Rust's
// str requires: no overlong forms, no surrogates, nothing above U+10FFFF).
size_t valid_utf8_prefix(std::string_view text);

// Decodes the code point starting at text[i] (which must be valid UTF-8); sets `len`.
inline char32_t decode_utf8(std::string_view text, size_t i, size_t& len) {
  auto b0 = static_cast<unsigned char>(text[i]);
  if (b0 < 0x80) {
    len = 1;
    return b0;
  }
  if (b0 < 0xE0) {
    len = 2;
    return (char32_t(b0 & 0x1F) << 6) | (static_cast<unsigned char>(text[i + 1]) & 0x3F);
  }
  if (b0 < 0xF0) {
    len = 3;
    return (char32_t(b0 & 0x0F) << 12) | (char32_t(static_cast<unsigned char>(text[i + 1]) & 0x3F) << 6) |
           (static_cast<unsigned char>(text[i + 2]) & 0x3F);
  }
  len = 4;
  return (char32_t(b0 & 0x07) << 18) | (char32_t(static_cast<unsigned char>(text[i + 1]) & 0x3F) << 12) |
         (char32_t(static_cast<unsigned char>(text[i + 2]) & 0x3F) << 6) |
         (static_cast<unsigned char>(text[i + 3]) & 0x3F);
}

inline size_t utf8_len(unsigned char lead) {
  return lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
}

void append_utf8(std::string& out, char32_t cp);

// Rust's char::is_whitespace (the White_Space property).
bool is_white_space(char32_t cp);
// The Rust `regex` crate's \w (Alphabetic, marks, decimal digits, connector punctuation, join controls).
bool is_rust_word(char32_t cp);
// Rust's char::is_numeric (general categories Nd, Nl, No).
bool is_numeric(char32_t cp);
// tokenizers' is_punc: ASCII punctuation or a general category P*.
bool is_punctuation(char32_t cp);
// General category M (Mn, Mc, Me): what StripAccents removes.
bool is_mark(char32_t cp);

enum class NormalForm { NFC, NFD, NFKC, NFKD };
std::string normalize(std::string_view text, NormalForm form);
// Rust's char::to_lowercase applied to every character (no context-dependent rules).
std::string lowercase(std::string_view text);

}  // namespace lw::tok
