// The pieces of the tokenizers pipeline (normalizers, pre-tokenizers, decoders), private to
// src/tokenizer. Each is built from its tokenizer.json object by the factories at the end.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "tokenizer/regex.h"

namespace lw::tok {

// ---- the text being tokenized: pieces of one buffer ----

struct Piece {
  uint32_t begin = 0, end = 0;  // bytes of Pieces::buf (empty for an added token)
  int32_t added = -1;           // the id when this piece is an added token
  bool origin = false;          // starts at offset 0 of the original text (Metaspace "first")
};

struct Pieces {
  std::string buf;
  std::vector<Piece> items;
  std::string_view text(const Piece& p) const { return std::string_view(buf).substr(p.begin, p.end - p.begin); }
  void clear() {
    buf.clear();
    items.clear();
  }
};

// ---- splitting, as NormalizedString::split ----

enum class Behavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

struct Span {
  size_t start, end;
  bool flag;  // is a match (input) / is to be removed (output)
};

// What a Split / Replace pattern matches: a regex (Oniguruma syntax), a literal string, or a
// character class.
class Pattern {
 public:
  enum class CharClass { None, Numeric, Punctuation, WhiteSpace, Char };
  static Pattern regex(const std::string& pattern);
  static Pattern literal(std::string text);
  static Pattern char_class(CharClass c, char32_t ch = 0);
  // The whole text as (span, is_match) pieces, as tokenizers' Pattern::find_matches.
  void find_matches(std::string_view text, std::vector<Span>& out, std::vector<Match>& scratch) const;

 private:
  std::shared_ptr<Regex> regex_;
  std::string literal_;
  CharClass class_ = CharClass::None;
  char32_t char_ = 0;
};

// matches (covering the text) -> the pieces to keep, after behaviour and invert.
void apply_behavior(std::vector<Span>& matches, Behavior behavior, bool invert, std::vector<Span>& out);

// ---- components ----

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  // `lead`: how many leading bytes of `text` come from offset 0 of the original text (the first
  // character and what was inserted before it), as far as Metaspace's prepend_scheme "first"
  // needs to know: a piece starting within them starts at the original offset 0.
  virtual void normalize(std::string& text, size_t& lead) const = 0;
};

struct PreTokenizeScratch {
  std::vector<Match> matches;
  std::vector<Span> spans, kept;
  std::string text;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Reads `in` (which it may take apart) and fills `out` (cleared by the caller).
  virtual void pre_tokenize(Pieces& in, Pieces& out, PreTokenizeScratch& scratch) const = 0;
};

class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual void decode_chain(std::vector<std::string>& tokens) const = 0;
};

// Build from JSON (null -> nullptr). Errors: std::runtime_error with a message naming the
// component type; the caller adds the file.
std::unique_ptr<Normalizer> make_normalizer(const nlohmann::json& j);
std::unique_ptr<PreTokenizer> make_pre_tokenizer(const nlohmann::json& j);
std::unique_ptr<Decoder> make_decoder(const nlohmann::json& j);

// Rust's String::from_utf8_lossy (one U+FFFD per maximal invalid subpart).
std::string utf8_lossy(std::string_view bytes);

}  // namespace lw::tok
