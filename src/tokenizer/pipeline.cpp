#include "tokenizer/pipeline.h"

#include <algorithm>
#include <array>
#include <stdexcept>

#include "tokenizer/unicode.h"

namespace lw::tok {

using nlohmann::json;

namespace {

[[noreturn]] void bad(const std::string& message) { throw std::runtime_error(message); }

std::string type_of(const json& j, const char* what) {
  if (!j.is_object()) bad(std::string(what) + " must be an object, not " + j.dump());
  auto it = j.find("type");
  if (it == j.end() || !it->is_string()) bad(std::string(what) + " has no \"type\": " + j.dump().substr(0, 200));
  return it->get<std::string>();
}

const json& field(const json& j, const char* key, const std::string& type) {
  auto it = j.find(key);
  if (it == j.end()) bad(type + " has no \"" + std::string(key) + "\"");
  return *it;
}

bool bool_or(const json& j, const char* key, bool fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) bad(std::string("\"") + key + "\" must be a boolean");
  return it->get<bool>();
}

std::string string_field(const json& j, const char* key, const std::string& type) {
  const json& v = field(j, key, type);
  if (!v.is_string()) bad(type + " \"" + key + "\" must be a string");
  return v.get<std::string>();
}

// A single character given as a JSON string.
std::string char_field(const json& j, const char* key, const std::string& type) {
  std::string s = string_field(j, key, type);
  if (s.empty() || utf8_len(static_cast<unsigned char>(s[0])) != s.size() || valid_utf8_prefix(s) != s.size())
    bad(type + " \"" + key + "\" must be one character");
  return s;
}

// {"String": "..."} or {"Regex": "..."}
Pattern pattern_field(const json& j, const std::string& type) {
  const json& p = field(j, "pattern", type);
  if (p.is_object()) {
    if (auto it = p.find("String"); it != p.end() && it->is_string()) return Pattern::literal(it->get<std::string>());
    if (auto it = p.find("Regex"); it != p.end() && it->is_string()) {
      try {
        return Pattern::regex(it->get<std::string>());
      } catch (const std::runtime_error& e) {
        bad(type + ": " + e.what());
      }
    }
  }
  bad(type + " pattern must be {\"String\": ...} or {\"Regex\": ...}, not " + p.dump());
}

Behavior behavior_field(const json& j, const std::string& type, Behavior fallback) {
  auto it = j.find("behavior");
  if (it == j.end() || it->is_null()) return fallback;
  std::string b = it->is_string() ? it->get<std::string>() : it->dump();
  if (b == "Removed") return Behavior::Removed;
  if (b == "Isolated") return Behavior::Isolated;
  if (b == "MergedWithPrevious") return Behavior::MergedWithPrevious;
  if (b == "MergedWithNext") return Behavior::MergedWithNext;
  if (b == "Contiguous") return Behavior::Contiguous;
  bad(type + " has an unknown behavior " + b);
}

void replace_all(std::string& text, const Pattern& pattern, const std::string& content) {
  std::vector<Span> matches;
  std::vector<Match> scratch;
  pattern.find_matches(text, matches, scratch);
  std::string out;
  out.reserve(text.size());
  for (auto& m : matches) {
    if (m.flag)
      out += content;
    else
      out.append(text, m.start, m.end - m.start);
  }
  text.swap(out);
}

// ---- byte-level alphabet ----

struct ByteLevelTables {
  std::array<std::string, 256> byte_to_char;
  std::array<int16_t, 512> char_to_byte;  // code point -> byte, -1 when not in the alphabet
  ByteLevelTables() {
    char_to_byte.fill(-1);
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      char32_t cp = printable ? char32_t(b) : char32_t(256 + n++);
      append_utf8(byte_to_char[static_cast<size_t>(b)], cp);
      char_to_byte[cp] = static_cast<int16_t>(b);
    }
  }
};

const ByteLevelTables& byte_level() {
  static const ByteLevelTables tables;
  return tables;
}

// ---- normalizers ----

// After a normalization that may change the first character's length: the origin bytes still
// cover at least the first character.
size_t keep_lead(const std::string& text, size_t lead) {
  if (lead == 0 || text.empty()) return 0;
  return std::min(std::max(lead, utf8_len(static_cast<unsigned char>(text[0]))), text.size());
}

class SequenceNormalizer : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> parts) : parts_(std::move(parts)) {}
  void normalize(std::string& text, size_t& lead) const override {
    for (auto& p : parts_) p->normalize(text, lead);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> parts_;
};

class UnicodeNormalizer : public Normalizer {
 public:
  explicit UnicodeNormalizer(NormalForm form) : form_(form) {}
  void normalize(std::string& text, size_t& lead) const override {
    text = tok::normalize(text, form_);
    lead = keep_lead(text, lead);
  }

 private:
  NormalForm form_;
};

class LowercaseNormalizer : public Normalizer {
 public:
  void normalize(std::string& text, size_t& lead) const override {
    text = lowercase(text);
    lead = keep_lead(text, lead);
  }
};

class StripNormalizer : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  void normalize(std::string& text, size_t& lead) const override {
    size_t begin = 0, end = text.size();
    if (left_) {
      while (begin < end) {
        size_t len;
        char32_t cp = decode_utf8(text, begin, len);
        if (!is_white_space(cp)) break;
        begin += len;
      }
    }
    if (right_) {
      while (end > begin) {
        size_t start = end - 1;
        while (start > begin && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
        size_t len;
        char32_t cp = decode_utf8(text, start, len);
        if (!is_white_space(cp)) break;
        end = start;
      }
    }
    lead = lead > begin ? std::min(lead - begin, end - begin) : 0;
    text = text.substr(begin, end - begin);
  }

 private:
  bool left_, right_;
};

class StripAccentsNormalizer : public Normalizer {
 public:
  void normalize(std::string& text, size_t& lead) const override {
    std::string out;
    out.reserve(text.size());
    size_t i = 0, new_lead = 0;
    while (i < text.size()) {
      size_t len;
      char32_t cp = decode_utf8(text, i, len);
      if (!is_mark(cp)) {
        out.append(text, i, len);
        if (i < lead) new_lead = out.size();
      }
      i += len;
    }
    lead = new_lead;
    text.swap(out);
  }
};

class PrependNormalizer : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prepend) : prepend_(std::move(prepend)) {}
  void normalize(std::string& text, size_t& lead) const override {
    if (text.empty()) return;
    text.insert(0, prepend_);
    if (lead > 0) lead += prepend_.size();
  }

 private:
  std::string prepend_;
};

class ReplaceNormalizer : public Normalizer {
 public:
  ReplaceNormalizer(Pattern pattern, std::string content) : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void normalize(std::string& text, size_t& lead) const override {
    // A replacement takes the place (and original offsets) of what it replaces.
    if (lead > 0) {
      std::vector<Span> matches;
      std::vector<Match> scratch;
      pattern_.find_matches(text, matches, scratch);
      size_t new_lead = lead;
      for (const Span& m : matches) {
        if (!m.flag) continue;
        if (m.start >= lead) break;
        size_t replaced = std::min(m.end, lead) - m.start;
        new_lead = static_cast<size_t>(static_cast<long>(new_lead) + static_cast<long>(content_.size()) -
                                       static_cast<long>(replaced));
      }
      lead = new_lead;
    }
    replace_all(text, pattern_, content_);
  }

 private:
  Pattern pattern_;
  std::string content_;
};

class ByteLevelNormalizer : public Normalizer {
 public:
  void normalize(std::string& text, size_t& lead) const override {
    const auto& t = byte_level();
    size_t new_lead = 0;
    for (size_t i = 0; i < lead && i < text.size(); ++i) new_lead += t.byte_to_char[static_cast<unsigned char>(text[i])].size();
    lead = new_lead;
    std::string out;
    out.reserve(text.size() * 2);
    for (char c : text) out += t.byte_to_char[static_cast<unsigned char>(c)];
    text.swap(out);
  }
};

// ---- pre-tokenizers ----

// Splits every text piece of `in` along `pattern`; the buffer is reused.
void split_pieces(Pieces& in, Pieces& out, PreTokenizeScratch& s, const Pattern& pattern, Behavior behavior,
                  bool invert) {
  out.buf.swap(in.buf);
  for (const Piece& p : in.items) {
    if (p.added >= 0) {
      out.items.push_back(p);
      continue;
    }
    std::string_view text = std::string_view(out.buf).substr(p.begin, p.end - p.begin);
    s.spans.clear();
    s.kept.clear();
    pattern.find_matches(text, s.spans, s.matches);
    apply_behavior(s.spans, behavior, invert, s.kept);
    for (const Span& k : s.kept)
      out.items.push_back({static_cast<uint32_t>(p.begin + k.start), static_cast<uint32_t>(p.begin + k.end), -1,
                           p.origin && k.start == 0});
  }
}

class SequencePreTokenizer : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> parts) : parts_(std::move(parts)) {}
  void pre_tokenize(Pieces& in, Pieces& out, PreTokenizeScratch& s) const override {
    if (parts_.empty()) {
      std::swap(in, out);
      return;
    }
    Pieces a, b;
    Pieces* src = &in;
    for (size_t i = 0; i < parts_.size(); ++i) {
      Pieces* dst = i + 1 == parts_.size() ? &out : (src == &a ? &b : &a);
      dst->clear();
      parts_[i]->pre_tokenize(*src, *dst, s);
      src = dst;
    }
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> parts_;
};

constexpr const char* kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class ByteLevelPreTokenizer : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, bool use_regex)
      : add_prefix_space_(add_prefix_space), use_regex_(use_regex), pattern_(Pattern::regex(kGpt2Pattern)) {}
  void pre_tokenize(Pieces& in, Pieces& out, PreTokenizeScratch& s) const override {
    const auto& table = byte_level();
    for (const Piece& p : in.items) {
      if (p.added >= 0) {
        out.items.push_back(p);
        continue;
      }
      std::string_view text = in.text(p);
      if (add_prefix_space_ && text.front() != ' ') {
        s.text.assign(1, ' ');
        s.text.append(text);
        text = s.text;
      }
      s.kept.clear();
      if (use_regex_) {
        s.spans.clear();
        pattern_.find_matches(text, s.spans, s.matches);
        apply_behavior(s.spans, Behavior::Isolated, false, s.kept);
      } else {
        s.kept.push_back({0, text.size(), false});
      }
      for (const Span& k : s.kept) {
        auto begin = static_cast<uint32_t>(out.buf.size());
        for (size_t i = k.start; i < k.end; ++i) out.buf += table.byte_to_char[static_cast<unsigned char>(text[i])];
        out.items.push_back({begin, static_cast<uint32_t>(out.buf.size()), -1, p.origin && k.start == 0});
      }
    }
  }

 private:
  bool add_prefix_space_, use_regex_;
  Pattern pattern_;
};

class SplitPreTokenizer : public PreTokenizer {
 public:
  SplitPreTokenizer(Pattern pattern, Behavior behavior, bool invert)
      : pattern_(std::move(pattern)), behavior_(behavior), invert_(invert) {}
  void pre_tokenize(Pieces& in, Pieces& out, PreTokenizeScratch& s) const override {
    split_pieces(in, out, s, pattern_, behavior_, invert_);
  }

 private:
  Pattern pattern_;
  Behavior behavior_;
  bool invert_;
};

enum class PrependScheme { Always, First, Never };

class MetaspacePreTokenizer : public PreTokenizer {
 public:
  MetaspacePreTokenizer(std::string replacement, PrependScheme scheme, bool split)
      : replacement_(std::move(replacement)), scheme_(scheme), split_(split) {
    size_t len;
    pattern_ = Pattern::char_class(Pattern::CharClass::Char, decode_utf8(replacement_, 0, len));
  }
  void pre_tokenize(Pieces& in, Pieces& out, PreTokenizeScratch& s) const override {
    for (const Piece& p : in.items) {
      if (p.added >= 0) {
        out.items.push_back(p);
        continue;
      }
      std::string_view text = in.text(p);
      s.text.clear();
      for (char c : text) {
        if (c == ' ')
          s.text += replacement_;
        else
          s.text += c;
      }
      bool starts = s.text.compare(0, replacement_.size(), replacement_) == 0;
      if (!starts && (scheme_ == PrependScheme::Always || (scheme_ == PrependScheme::First && p.origin)))
        s.text.insert(0, replacement_);
      auto base = out.buf.size();
      out.buf += s.text;
      s.kept.clear();
      if (split_) {
        s.spans.clear();
        pattern_.find_matches(s.text, s.spans, s.matches);
        apply_behavior(s.spans, Behavior::MergedWithNext, false, s.kept);
      } else {
        s.kept.push_back({0, s.text.size(), false});
      }
      for (const Span& k : s.kept)
        out.items.push_back({static_cast<uint32_t>(base + k.start), static_cast<uint32_t>(base + k.end), -1,
                             p.origin && k.start == 0});
    }
  }

 private:
  std::string replacement_;
  PrependScheme scheme_;
  bool split_;
  Pattern pattern_;
};

// Whitespace: the Rust regex \w+|[^\w\s]+, kept (everything else removed).
class WhitespacePreTokenizer : public PreTokenizer {
 public:
  void pre_tokenize(Pieces& in, Pieces& out, PreTokenizeScratch&) const override {
    out.buf.swap(in.buf);
    for (const Piece& p : in.items) {
      if (p.added >= 0) {
        out.items.push_back(p);
        continue;
      }
      std::string_view text = std::string_view(out.buf).substr(p.begin, p.end - p.begin);
      size_t i = 0;
      while (i < text.size()) {
        size_t len;
        char32_t cp = decode_utf8(text, i, len);
        if (is_white_space(cp) && !is_rust_word(cp)) {
          i += len;
          continue;
        }
        bool word = is_rust_word(cp);
        size_t start = i;
        i += len;
        while (i < text.size()) {
          cp = decode_utf8(text, i, len);
          bool w = is_rust_word(cp);
          if (word ? !w : (w || is_white_space(cp))) break;
          i += len;
        }
        out.items.push_back({static_cast<uint32_t>(p.begin + start), static_cast<uint32_t>(p.begin + i), -1,
                             p.origin && start == 0});
      }
    }
  }
};

// ---- decoders ----

class SequenceDecoder : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> parts) : parts_(std::move(parts)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (auto& p : parts_) p->decode_chain(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> parts_;
};

class ByteLevelDecoder : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    const auto& t = byte_level();
    std::string bytes;
    for (const std::string& token : tokens) {
      size_t mark = bytes.size();
      bool ok = true;
      size_t i = 0;
      while (i < token.size()) {
        size_t len;
        char32_t cp = decode_utf8(token, i, len);
        i += len;
        if (cp >= t.char_to_byte.size() || t.char_to_byte[cp] < 0) {
          ok = false;
          break;
        }
        bytes.push_back(static_cast<char>(t.char_to_byte[cp]));
      }
      if (!ok) {
        bytes.resize(mark);
        bytes += token;
      }
    }
    tokens.assign(1, utf8_lossy(bytes));
  }
};

class ByteFallbackDecoder : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    out.reserve(tokens.size());
    std::string pending;
    auto flush = [&] {
      if (pending.empty()) return;
      if (valid_utf8_prefix(pending) == pending.size())
        out.push_back(pending);
      else
        for (size_t i = 0; i < pending.size(); ++i) out.emplace_back("\xEF\xBF\xBD");
      pending.clear();
    };
    for (std::string& token : tokens) {
      int byte = parse(token);
      if (byte >= 0) {
        pending.push_back(static_cast<char>(byte));
      } else {
        flush();
        out.push_back(std::move(token));
      }
    }
    flush();
    tokens.swap(out);
  }

 private:
  static int hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }
  static int parse(const std::string& t) {
    if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return -1;
    int hi = hex(t[3]), lo = hex(t[4]);
    if (hi < 0 || lo < 0) return -1;
    return hi * 16 + lo;
  }
};

class FuseDecoder : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string all;
    for (auto& t : tokens) all += t;
    tokens.assign(1, std::move(all));
  }
};

class StripDecoder : public Decoder {
 public:
  StripDecoder(char32_t content, size_t start, size_t stop) : content_(content), start_(start), stop_(stop) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::pair<size_t, char32_t>> chars;  // byte offset, code point
    for (std::string& token : tokens) {
      chars.clear();
      size_t i = 0;
      while (i < token.size()) {
        size_t len;
        chars.push_back({i, decode_utf8(token, i, len)});
        i += len;
      }
      size_t start_cut = 0;
      for (size_t k = 0; k < start_ && k < chars.size(); ++k) {
        if (chars[k].second != content_) break;
        start_cut = k + 1;
      }
      size_t stop_cut = chars.size();
      for (size_t k = 0; k < stop_ && k < chars.size(); ++k) {
        size_t index = chars.size() - k - 1;
        if (chars[index].second != content_) break;
        stop_cut = index;
      }
      if (stop_cut <= start_cut) {
        token.clear();
        continue;
      }
      size_t b = start_cut < chars.size() ? chars[start_cut].first : token.size();
      size_t e = stop_cut < chars.size() ? chars[stop_cut].first : token.size();
      token = token.substr(b, e - b);
    }
  }

 private:
  char32_t content_;
  size_t start_, stop_;
};

class ReplaceDecoder : public Decoder {
 public:
  ReplaceDecoder(Pattern pattern, std::string content) : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (auto& t : tokens) replace_all(t, pattern_, content_);
  }

 private:
  Pattern pattern_;
  std::string content_;
};

class MetaspaceDecoder : public Decoder {
 public:
  MetaspaceDecoder(std::string replacement, PrependScheme scheme)
      : replacement_(std::move(replacement)), scheme_(scheme) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string& t = tokens[i];
      if (t.find(replacement_) == std::string::npos) continue;
      bool drop = i == 0 && scheme_ != PrependScheme::Never;
      std::string out;
      size_t pos = 0;
      while (true) {
        size_t hit = t.find(replacement_, pos);
        if (hit == std::string::npos) break;
        out.append(t, pos, hit - pos);
        if (!drop) out += ' ';
        pos = hit + replacement_.size();
      }
      out.append(t, pos);
      t.swap(out);
    }
  }

 private:
  std::string replacement_;
  PrependScheme scheme_;
};

class BpeDecoder : public Decoder {
 public:
  explicit BpeDecoder(std::string suffix) : suffix_(std::move(suffix)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    if (suffix_.empty()) return;
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string& t = tokens[i];
      std::string out;
      size_t pos = 0;
      while (true) {
        size_t hit = t.find(suffix_, pos);
        if (hit == std::string::npos) break;
        out.append(t, pos, hit - pos);
        if (i + 1 != tokens.size()) out += ' ';
        pos = hit + suffix_.size();
      }
      out.append(t, pos);
      t.swap(out);
    }
  }

 private:
  std::string suffix_;
};

PrependScheme prepend_scheme(const json& j, const std::string& type) {
  auto it = j.find("prepend_scheme");
  if (it != j.end() && !it->is_null()) {
    std::string s = it->is_string() ? it->get<std::string>() : it->dump();
    if (s == "always") return PrependScheme::Always;
    if (s == "first") return PrependScheme::First;
    if (s == "never") return PrependScheme::Never;
    bad(type + " has an unknown prepend_scheme " + s);
  }
  // Files written before prepend_scheme existed.
  return bool_or(j, "add_prefix_space", true) ? PrependScheme::Always : PrependScheme::Never;
}

size_t size_field(const json& j, const char* key, const std::string& type) {
  const json& v = field(j, key, type);
  if (!v.is_number_unsigned() && !(v.is_number_integer() && v.get<int64_t>() >= 0))
    bad(type + " \"" + key + "\" must be a non-negative integer");
  return v.get<size_t>();
}

}  // namespace

// ---- Pattern ----

Pattern Pattern::regex(const std::string& pattern) {
  Pattern p;
  p.regex_ = std::make_shared<Regex>(pattern);
  return p;
}

Pattern Pattern::literal(std::string text) {
  Pattern p;
  p.literal_ = std::move(text);
  return p;
}

Pattern Pattern::char_class(CharClass c, char32_t ch) {
  Pattern p;
  p.class_ = c;
  p.char_ = ch;
  return p;
}

void Pattern::find_matches(std::string_view text, std::vector<Span>& out, std::vector<Match>& scratch) const {
  if (text.empty()) {
    out.push_back({0, 0, false});
    return;
  }
  if (class_ != CharClass::None) {
    size_t last = 0, i = 0;
    while (i < text.size()) {
      size_t len;
      char32_t cp = decode_utf8(text, i, len);
      bool hit = false;
      switch (class_) {
        case CharClass::Numeric: hit = is_numeric(cp); break;
        case CharClass::Punctuation: hit = is_punctuation(cp); break;
        case CharClass::WhiteSpace: hit = is_white_space(cp); break;
        case CharClass::Char: hit = cp == char_; break;
        case CharClass::None: break;
      }
      if (hit) {
        if (last < i) out.push_back({last, i, false});
        out.push_back({i, i + len, true});
        last = i + len;
      }
      i += len;
    }
    if (last < text.size()) out.push_back({last, text.size(), false});
    return;
  }
  scratch.clear();
  if (regex_) {
    regex_->find_all(text, scratch);
  } else if (!literal_.empty()) {
    size_t pos = 0;
    while (true) {
      size_t hit = text.find(literal_, pos);
      if (hit == std::string_view::npos) break;
      scratch.push_back({hit, hit + literal_.size()});
      pos = hit + literal_.size();
    }
  }
  size_t prev = 0;
  for (const Match& m : scratch) {
    if (prev != m.start) out.push_back({prev, m.start, false});
    out.push_back({m.start, m.end, true});
    prev = m.end;
  }
  if (prev != text.size()) out.push_back({prev, text.size(), false});
}

void apply_behavior(std::vector<Span>& matches, Behavior behavior, bool invert, std::vector<Span>& out) {
  if (invert)
    for (auto& m : matches) m.flag = !m.flag;
  size_t first_new = out.size();
  switch (behavior) {
    case Behavior::Isolated:
      for (auto& m : matches) out.push_back({m.start, m.end, false});
      break;
    case Behavior::Removed:
      for (auto& m : matches) out.push_back(m);
      break;
    case Behavior::Contiguous: {
      bool prev = false;
      for (auto& m : matches) {
        if (out.size() > first_new && m.flag == prev)
          out.back().end = m.end;
        else
          out.push_back({m.start, m.end, false});
        prev = m.flag;
      }
      break;
    }
    case Behavior::MergedWithPrevious: {
      bool prev = false;
      for (auto& m : matches) {
        if (out.size() > first_new && m.flag && !prev)
          out.back().end = m.end;
        else
          out.push_back({m.start, m.end, false});
        prev = m.flag;
      }
      break;
    }
    case Behavior::MergedWithNext: {
      bool prev = false;
      for (size_t k = matches.size(); k-- > 0;) {
        auto& m = matches[k];
        if (out.size() > first_new && m.flag && !prev)
          out.back().start = m.start;
        else
          out.push_back({m.start, m.end, false});
        prev = m.flag;
      }
      std::reverse(out.begin() + static_cast<std::ptrdiff_t>(first_new), out.end());
      break;
    }
  }
  // Drop removed and empty pieces.
  size_t w = first_new;
  for (size_t r = first_new; r < out.size(); ++r)
    if (!out[r].flag && out[r].end > out[r].start) out[w++] = out[r];
  out.resize(w);
}

// ---- factories ----

// The parts of a "Sequence" component, each built by `make` (null parts are skipped).
template <typename Part, typename Make>
std::vector<std::unique_ptr<Part>> sequence_parts(const json& j, const char* key, const std::string& type, Make make) {
  std::vector<std::unique_ptr<Part>> parts;
  const json& list = field(j, key, type);
  if (!list.is_array()) bad(std::string("Sequence \"") + key + "\" must be an array");
  for (const auto& entry : list)
    if (auto part = make(entry)) parts.push_back(std::move(part));
  return parts;
}

std::unique_ptr<Normalizer> make_normalizer(const json& j) {
  if (j.is_null()) return nullptr;
  std::string type = type_of(j, "normalizer");
  if (type == "Sequence")
    return std::make_unique<SequenceNormalizer>(sequence_parts<Normalizer>(j, "normalizers", type, make_normalizer));
  if (type == "NFC") return std::make_unique<UnicodeNormalizer>(NormalForm::NFC);
  if (type == "NFD") return std::make_unique<UnicodeNormalizer>(NormalForm::NFD);
  if (type == "NFKC") return std::make_unique<UnicodeNormalizer>(NormalForm::NFKC);
  if (type == "NFKD") return std::make_unique<UnicodeNormalizer>(NormalForm::NFKD);
  if (type == "Lowercase") return std::make_unique<LowercaseNormalizer>();
  if (type == "Strip")
    return std::make_unique<StripNormalizer>(bool_or(j, "strip_left", true), bool_or(j, "strip_right", true));
  if (type == "StripAccents") return std::make_unique<StripAccentsNormalizer>();
  if (type == "Prepend") return std::make_unique<PrependNormalizer>(string_field(j, "prepend", type));
  if (type == "Replace") return std::make_unique<ReplaceNormalizer>(pattern_field(j, type), string_field(j, "content", type));
  if (type == "ByteLevel") return std::make_unique<ByteLevelNormalizer>();
  bad("unsupported normalizer type \"" + type + "\"");
}

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const json& j) {
  if (j.is_null()) return nullptr;
  std::string type = type_of(j, "pre_tokenizer");
  if (type == "Sequence")
    return std::make_unique<SequencePreTokenizer>(sequence_parts<PreTokenizer>(j, "pretokenizers", type, make_pre_tokenizer));
  if (type == "ByteLevel")
    return std::make_unique<ByteLevelPreTokenizer>(bool_or(j, "add_prefix_space", true), bool_or(j, "use_regex", true));
  if (type == "Split")
    return std::make_unique<SplitPreTokenizer>(pattern_field(j, type), behavior_field(j, type, Behavior::Removed),
                                               bool_or(j, "invert", false));
  if (type == "Metaspace")
    return std::make_unique<MetaspacePreTokenizer>(char_field(j, "replacement", type), prepend_scheme(j, type),
                                                   bool_or(j, "split", true));
  if (type == "Digits")
    return std::make_unique<SplitPreTokenizer>(Pattern::char_class(Pattern::CharClass::Numeric),
                                               bool_or(j, "individual_digits", false) ? Behavior::Isolated
                                                                                      : Behavior::Contiguous,
                                               false);
  if (type == "Punctuation")
    return std::make_unique<SplitPreTokenizer>(Pattern::char_class(Pattern::CharClass::Punctuation),
                                               behavior_field(j, type, Behavior::Isolated), false);
  if (type == "WhitespaceSplit")
    return std::make_unique<SplitPreTokenizer>(Pattern::char_class(Pattern::CharClass::WhiteSpace), Behavior::Removed,
                                               false);
  if (type == "Whitespace") return std::make_unique<WhitespacePreTokenizer>();
  if (type == "CharDelimiterSplit") {
    std::string d = char_field(j, "delimiter", type);
    size_t len;
    return std::make_unique<SplitPreTokenizer>(Pattern::char_class(Pattern::CharClass::Char, decode_utf8(d, 0, len)),
                                               Behavior::Removed, false);
  }
  bad("unsupported pre_tokenizer type \"" + type + "\"");
}

std::unique_ptr<Decoder> make_decoder(const json& j) {
  if (j.is_null()) return nullptr;
  std::string type = type_of(j, "decoder");
  if (type == "Sequence")
    return std::make_unique<SequenceDecoder>(sequence_parts<Decoder>(j, "decoders", type, make_decoder));
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Strip") {
    std::string c = char_field(j, "content", type);
    size_t len;
    return std::make_unique<StripDecoder>(decode_utf8(c, 0, len), size_field(j, "start", type),
                                          size_field(j, "stop", type));
  }
  if (type == "Replace") return std::make_unique<ReplaceDecoder>(pattern_field(j, type), string_field(j, "content", type));
  if (type == "Metaspace")
    return std::make_unique<MetaspaceDecoder>(char_field(j, "replacement", type), prepend_scheme(j, type));
  if (type == "BPEDecoder") {
    auto it = j.find("suffix");
    return std::make_unique<BpeDecoder>(it != j.end() && it->is_string() ? it->get<std::string>() : "</w>");
  }
  bad("unsupported decoder type \"" + type + "\"");
}

std::string utf8_lossy(std::string_view bytes) {
  size_t valid = valid_utf8_prefix(bytes);
  if (valid == bytes.size()) return std::string(bytes);
  std::string out(bytes.substr(0, valid));
  const auto* s = reinterpret_cast<const unsigned char*>(bytes.data());
  size_t i = valid, n = bytes.size();
  while (i < n) {
    size_t ok = valid_utf8_prefix(bytes.substr(i));
    if (ok > 0) {
      out.append(bytes.substr(i, ok));
      i += ok;
      continue;
    }
    // s[i] starts an invalid sequence: skip its maximal valid prefix (at least one byte).
    unsigned char b = s[i];
    size_t need = 0;
    unsigned char lo = 0x80, hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) {
      need = 1;
    } else if (b >= 0xE0 && b <= 0xEF) {
      need = 2;
      if (b == 0xE0) lo = 0xA0;
      if (b == 0xED) hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
      need = 3;
      if (b == 0xF0) lo = 0x90;
      if (b == 0xF4) hi = 0x8F;
    }
    size_t len = 1;
    for (size_t k = 0; k < need && i + len < n; ++k) {
      unsigned char c = s[i + len];
      unsigned char l = k == 0 ? lo : 0x80, h = k == 0 ? hi : 0xBF;
      if (c < l || c > h) break;
      ++len;
    }
    out += "\xEF\xBF\xBD";
    i += len;
  }
  return out;
}

}  // namespace lw::tok
