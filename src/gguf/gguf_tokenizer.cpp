#include "gguf/gguf_tokenizer.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <optional>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "common/error.h"

namespace lw {
namespace {

using json = nlohmann::json;

// tokenizer.ggml.token_type values (llama.cpp's llama_token_type).
constexpr int64_t kTypeUnknown = 2;
constexpr int64_t kTypeControl = 3;
constexpr int64_t kTypeUserDefined = 4;

constexpr const char* kSpace = "\xE2\x96\x81";  // "▁" U+2581, SentencePiece's space

// ---- pre-tokenizer regexes ----
// Hugging Face tokenizers' own patterns (Oniguruma syntax), as the models' tokenizer.json files
// hold them and as llama.cpp's llama-vocab.cpp quotes them ("original regex from
// tokenizer.json"); non-ASCII characters are escaped so no editor or tool can normalise them.

constexpr const char* kLlama3Split =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
constexpr const char* kQwen2Split =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
constexpr const char* kQwen35Split =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}| ?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
constexpr const char* kTekkenSplit =
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+"
    "|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*"
    "|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
constexpr const char* kGpt4oSplit =
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    "|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    "|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
constexpr const char* kSeedCoderSplit =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1}| ?[^\\s\\p{L}\\p{N}\\r\\n]+|\\s*[\\r\\n]+|"
    "\\s+(?!\\S)|\\s+";
// DeepSeek LLM: cased letters (the ranges of the model's tokenizer.json), CJK/Hangul, punctuation.
constexpr const char* kDeepseekLlmLetters =
    "\\s?[A-Za-z\u00B5\u00C0-\u00D6\u00D8-\u00F6\u00F8-\u01BA\u01BC-\u01BF\u01C4-\u0293\u0295-\u02AF\u0370-\u0373"
    "\u0376\u0377\u037B-\u037D\u037F\u0386\u0388-\u038A\u038C\u038E-\u03A1\u03A3-\u03F5\u03F7-\u0481\u048A-\u052F"
    "\u0531-\u0556\u10A0-\u10C5\u13A0-\u13F5\u13F8-\u13FD\u1C90-\u1CBA\u1CBD-\u1CBF\u1D00-\u1D2B\u1D6B-\u1D77"
    "\u1D79-\u1D9A\u1E00-\u1F15\u1F18-\u1F1D\u1F20-\u1F45\u1F48-\u1F4D\u1F50-\u1F57\u1F59\u1F5B\u1F5D\u1F5F-\u1F7D"
    "\u1F80-\u1FB4\u1FB6-\u1FBC\u1FBE\u1FC2-\u1FC4\u1FC6-\u1FCC\u1FD0-\u1FD3\u1FD6-\u1FDB\u1FE0-\u1FEC\u1FF2-\u1FF4"
    "\u1FF6-\u1FFC\u2102\u2107\u210A-\u2113\u2115\u2119-\u211D\u2124\u2126\u2128\u212A-\u212D\u212F-\u2134\u2139"
    "\u213C-\u213F\u2145-\u2149\u214E\u2183\u2184\u2C00-\u2C7B\u2C7E-\u2CE4\u2CEB-\u2CEE\u2CF2\u2CF3\uA640-\uA66D"
    "\uA680-\uA69B\uA722-\uA76F\uA771-\uA787\uA78B-\uA78E\uAB70-\uABBF\uFB00-\uFB06\uFB13-\uFB17\uFF21-\uFF3A"
    "\uFF41-\uFF5A\U00010400-\U0001044F\U000104B0-\U000104D3\U000104D8-\U000104FB\U00010C80-\U00010CB2"
    "\U00010CC0-\U00010CF2\U000118A0-\U000118DF\U0001E900-\U0001E943]+";
constexpr const char* kDeepseekLlmPunct = "\\s?[!-/:-~\uFF01-\uFF0F\uFF1A-\uFF5E\u2018-\u201F\u3000-\u3002]+";
constexpr const char* kCjkHangul = "[\u4E00-\u9FA5\u0800-\u4E00\uAC00-\uD7FF]+";
// DeepSeek V3.
constexpr const char* kDeepseekV3Cjk = "[\u4E00-\u9FA5\u3040-\u309F\u30A0-\u30FF]+";
constexpr const char* kDeepseekV3Main =
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\\r\\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+|"
    " ?[\\p{P}\\p{S}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
// BLOOM, Poro, GPT-3 Finnish, Viking.
constexpr const char* kBloomSplit = " ?[^(\\s|.,!?\u2026\u3002\uFF0C\u3001\u0964\u06D4\u060C)]+";

json split(const char* regex) {
  return {{"type", "Split"}, {"pattern", {{"Regex", regex}}}, {"behavior", "Isolated"}, {"invert", false}};
}
json byte_level(bool use_regex) {
  return {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", use_regex}};
}
json digits(bool individual) { return {{"type", "Digits"}, {"individual_digits", individual}}; }
json sequence(std::vector<json> steps) { return {{"type", "Sequence"}, {"pretokenizers", std::move(steps)}}; }
// Splits by each regex in turn, then maps bytes (llama.cpp's regex_exprs, as Hugging Face does it).
json splits_then_bytes(std::initializer_list<const char*> regexes) {
  std::vector<json> steps;
  for (const char* regex : regexes) steps.push_back(split(regex));
  steps.push_back(byte_level(false));
  return sequence(std::move(steps));
}

struct PreTokenizer {
  json json_value;
  bool ignore_merges = false;  // llama.cpp's ignore_merges (and the model's tokenizer.json)
  bool add_bos = false;        // llama.cpp's add_bos default when the file does not say
};

bool is_one_of(const std::string& name, std::initializer_list<const char*> names) {
  for (const char* candidate : names)
    if (name == candidate) return true;
  return false;
}

// The pre-tokenizer of a byte-level vocabulary from tokenizer.ggml.pre (llama.cpp's grouping of
// names in llama_vocab::impl::load and the regexes of llm_tokenizer_bpe).
PreTokenizer byte_level_pre_tokenizer(const std::string& pre, const std::string& path) {
  PreTokenizer out;
  // No name, "default" and GPT-2's relatives: GPT-2's byte-level regex. (llama.cpp's
  // "default" regexes are a falcon-like guess it warns about; transformers and the GPT-NeoX /
  // GPT-2 tokenizer.json files use ByteLevel's own regex.)
  if (pre.empty() ||
      is_one_of(pre, {"default", "gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de",
                      "a.x-4.0", "mellum", "modern-bert", "mpt", "olmo", "jais", "trillion", "granite-docling",
                      "exaone4", "jina-v1-en", "jina-v2-code", "roberta-bpe"})) {
    out.json_value = byte_level(true);
  } else if (is_one_of(pre, {"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2",
                             "jina-v5-nano"})) {
    out.json_value = splits_then_bytes({kLlama3Split});
    out.ignore_merges = true;
    out.add_bos = true;
  } else if (is_one_of(pre, {"dbrx", "smaug-bpe", "glm4", "chatglm-bpe"})) {
    out.json_value = splits_then_bytes({kLlama3Split});
  } else if (is_one_of(pre, {"qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez", "stablelm2", "hunyuan",
                             "solar-open", "grok-2"})) {
    out.json_value = splits_then_bytes({kQwen2Split});
  } else if (pre == "qwen35") {
    out.json_value = splits_then_bytes({kQwen35Split});
  } else if (is_one_of(pre, {"gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2"})) {
    out.json_value = splits_then_bytes({kGpt4oSplit});
  } else if (pre == "tekken") {
    out.json_value = splits_then_bytes({kTekkenSplit});
    out.ignore_merges = true;
    out.add_bos = true;
  } else if (pre == "seed-coder") {
    out.json_value = splits_then_bytes({kSeedCoderSplit});
  } else if (is_one_of(pre, {"starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva-7b",
                             "mellum2"})) {
    // Every digit alone, then GPT-2's regex.
    out.json_value = sequence({digits(true), byte_level(true)});
  } else if (pre == "falcon") {
    // Punctuation runs, GPT-2's regex, digit runs, then groups of three digits.
    out.json_value = sequence({{{"type", "Punctuation"}, {"behavior", "Contiguous"}},
                               byte_level(true),
                               digits(false),
                               split("[0-9][0-9][0-9]")});
  } else if (pre == "deepseek-llm") {
    out.json_value = sequence({split("[\r\n]"), split(kDeepseekLlmLetters), split(kDeepseekLlmPunct),
                               split("\\s+$"), split(kCjkHangul), digits(true), byte_level(false)});
  } else if (pre == "deepseek-coder") {
    out.json_value = sequence({split("[\r\n]"), split("\\s?\\p{L}+"), split("\\s?\\p{P}+"), split(kCjkHangul),
                               digits(true), byte_level(false)});
  } else if (is_one_of(pre, {"deepseek-v3", "hunyuan-dense", "joyai-llm", "hy_v4"})) {
    out.json_value = splits_then_bytes({"\\p{N}{1,3}", kDeepseekV3Cjk, kDeepseekV3Main});
  } else if (is_one_of(pre, {"poro-chat", "bloom", "gpt3-finnish"})) {
    out.json_value = splits_then_bytes({kBloomSplit});
  } else if (pre == "viking") {
    out.json_value = splits_then_bytes({kBloomSplit, "\\p{N}"});
  } else {
    fail(path, "tokenizer.ggml.pre '" + pre + "' is not a pre-tokenizer this converter knows");
  }
  return out;
}

// ---- text helpers ----

// Code points of UTF-8 text; a byte that does not start a valid sequence counts as one unit
// (0x110000 + byte), so splitting never cuts inside a character.
std::vector<std::pair<uint32_t, size_t>> code_points(std::string_view text) {
  std::vector<std::pair<uint32_t, size_t>> out;  // (code point, byte length)
  size_t i = 0;
  while (i < text.size()) {
    const auto c = static_cast<unsigned char>(text[i]);
    size_t length = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    uint32_t cp = 0;
    bool valid = length > 0 && i + length <= text.size();
    if (valid) {
      cp = length == 1 ? c : length == 2 ? (c & 0x1Fu) : length == 3 ? (c & 0x0Fu) : (c & 0x07u);
      for (size_t k = 1; k < length && valid; ++k) {
        const auto next = static_cast<unsigned char>(text[i + k]);
        if ((next & 0xC0) != 0x80) valid = false;
        cp = (cp << 6) | (next & 0x3Fu);
      }
      static constexpr uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
      if (valid && (cp < kMin[length] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))) valid = false;
    }
    if (!valid) {
      out.emplace_back(0x110000u + c, 1);
      ++i;
    } else {
      out.emplace_back(cp, length);
      i += length;
    }
  }
  return out;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// GPT-2's bytes_to_unicode(): printable bytes stand for themselves, the others for 256 + n.
const std::array<uint32_t, 256>& byte_to_unicode() {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    uint32_t n = 0;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      t[b] = printable ? b : 256 + n++;
    }
    return t;
  }();
  return table;
}

bool in_byte_alphabet(uint32_t cp) {
  if (cp < 256) return byte_to_unicode()[cp] == cp;
  return cp < 256 + 68;
}

bool spelled_in_byte_alphabet(std::string_view token) {
  for (const auto& [cp, length] : code_points(token))
    if (!in_byte_alphabet(cp)) return false;
  return true;
}

std::string respell_bytes(std::string_view token) {
  std::string out;
  for (char c : token) append_utf8(out, byte_to_unicode()[static_cast<unsigned char>(c)]);
  return out;
}

// Python's str.isspace() for one code point.
bool is_python_space(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
         cp == 0x3000;
}

// ---- the vocabulary as the file gives it ----

struct Vocab {
  std::string path;
  std::string model;
  std::string pre;
  std::string architecture;
  std::vector<std::string> tokens;
  std::vector<int64_t> types;     // one per token (1 = normal when the file has none)
  bool has_types = false;         // the file has tokenizer.ggml.token_type
  std::vector<double> scores;     // one per token, or empty
  std::optional<std::vector<std::string>> merges;
  std::optional<int64_t> bos, eos, unk, pad;
  std::optional<bool> add_bos, add_eos;
  bool add_space_prefix = true;
};

std::optional<int64_t> special_id(const GgufFile& file, const char* key, size_t n_tokens) {
  const GgufValue* value = file.find(key);
  if (!value) return std::nullopt;
  if (!value->is_integer()) fail(file.path(), std::string(key) + " is not an integer");
  // A negative id (some converters write -1) means "none", as in llama.cpp.
  if ((value->type == GgufType::INT8 || value->type == GgufType::INT16 || value->type == GgufType::INT32 ||
       value->type == GgufType::INT64) &&
      value->i < 0)
    return std::nullopt;
  const uint64_t id = file.get_uint(key);
  if (id >= n_tokens)
    fail(file.path(), std::string(key) + " is " + std::to_string(id) + ", outside the vocabulary of " +
                          std::to_string(n_tokens) + " tokens");
  return static_cast<int64_t>(id);
}

Vocab read_vocab(const GgufFile& file) {
  Vocab v;
  v.path = file.path();
  v.model = file.get_string("tokenizer.ggml.model");
  v.pre = file.find_string("tokenizer.ggml.pre").value_or("");
  v.architecture = file.find_string("general.architecture").value_or("");
  v.tokens = file.get_array_strings("tokenizer.ggml.tokens");
  const size_t n = v.tokens.size();
  if (n == 0) fail(v.path, "tokenizer.ggml.tokens is empty");
  if (n > static_cast<size_t>(INT32_MAX)) fail(v.path, "tokenizer.ggml.tokens has more tokens than ids can number");
  if (file.has("tokenizer.ggml.token_type")) {
    v.types = file.get_array_ints("tokenizer.ggml.token_type");
    v.has_types = true;
    if (v.types.size() != n)
      fail(v.path, "tokenizer.ggml.token_type has " + std::to_string(v.types.size()) + " entries for " +
                       std::to_string(n) + " tokens");
  } else {
    v.types.assign(n, 1);
  }
  if (file.has("tokenizer.ggml.scores")) {
    v.scores = file.get_array_floats("tokenizer.ggml.scores");
    if (v.scores.size() != n)
      fail(v.path, "tokenizer.ggml.scores has " + std::to_string(v.scores.size()) + " entries for " +
                       std::to_string(n) + " tokens");
  }
  if (file.has("tokenizer.ggml.merges")) v.merges = file.get_array_strings("tokenizer.ggml.merges");
  v.bos = special_id(file, "tokenizer.ggml.bos_token_id", n);
  v.eos = special_id(file, "tokenizer.ggml.eos_token_id", n);
  v.unk = special_id(file, "tokenizer.ggml.unknown_token_id", n);
  v.pad = special_id(file, "tokenizer.ggml.padding_token_id", n);
  v.add_bos = file.find_bool("tokenizer.ggml.add_bos_token");
  v.add_eos = file.find_bool("tokenizer.ggml.add_eos_token");
  v.add_space_prefix = file.find_bool("tokenizer.ggml.add_space_prefix").value_or(true);
  return v;
}

bool is_sentencepiece(const Vocab& v) { return v.model == "llama" || v.model == "gemma4"; }
bool is_gemma(const Vocab& v) {
  return v.model == "llama" && is_one_of(v.architecture, {"gemma", "gemma2", "gemma3"});
}

void check_supported(const Vocab& v) {
  if (v.model == "llama" || v.model == "gpt2" || v.model == "gemma4") return;
  fail(v.path, "tokenizer.ggml.model '" + v.model +
                   "' is not supported (this converter handles 'llama' SentencePiece and 'gpt2' byte-level BPE vocabularies)");
}

// The spelling of each token in the model's vocabulary.
std::vector<std::string> model_spellings(const Vocab& v) {
  std::vector<std::string> out = v.tokens;
  if (v.model == "gpt2") {
    // Byte-level: a token written in raw text is respelled in the byte alphabet, as transformers
    // does -- except the added (control / user-defined) ones, which are matched in raw text.
    for (size_t i = 0; i < out.size(); ++i)
      if (v.types[i] != kTypeControl && v.types[i] != kTypeUserDefined && !spelled_in_byte_alphabet(out[i]))
        out[i] = respell_bytes(out[i]);
  } else if (is_gemma(v)) {
    // Gemma stores runs of spaces as spaces; its normalizer looks them up as "▁▁...".
    for (auto& token : out) {
      const auto cps = code_points(token);
      bool has_space = false, all_space = !cps.empty();
      for (const auto& [cp, length] : cps) {
        if (cp == ' ') has_space = true;
        if (!is_python_space(cp)) all_space = false;
      }
      if (has_space && all_space) {
        std::string respelled;
        for (size_t k = 0; k < cps.size(); ++k) respelled += kSpace;
        token = std::move(respelled);
      }
    }
  }
  return out;
}

// transformers' generate_merges(vocab, vocab_scores): every split of every token into two
// tokens, ordered by the token's score (descending; or, without scores, by the token's id
// ascending), then by the lengths of the two pieces, keeping the order of the vocabulary for
// ties. Token spellings that repeat keep their first position and their last id and score, as a
// Python dict built from the list does.
std::vector<std::pair<std::string, std::string>> generate_merges(const std::vector<std::string>& spellings,
                                                                 const std::vector<double>* scores,
                                                                 const std::string& path) {
  std::unordered_map<std::string_view, size_t> last_id;
  last_id.reserve(spellings.size() * 2);
  std::vector<size_t> first_order;
  for (size_t i = 0; i < spellings.size(); ++i) {
    auto [it, inserted] = last_id.try_emplace(spellings[i], i);
    if (inserted)
      first_order.push_back(i);
    else
      it->second = i;
  }
  size_t longest = 0, total = 0;
  for (const auto& s : spellings) {
    longest = std::max(longest, s.size());
    total += s.size();
  }
  // Work budget: each candidate split hashes up to the token's length. Real vocabularies need a
  // few bytes per token byte; a hostile one (many long tokens that split into tokens) could need
  // the square of the file size, and as many merges.
  const uint64_t budget = 64 * static_cast<uint64_t>(total) + (uint64_t{1} << 26);
  uint64_t work = 0;
  std::vector<bool> has_length(longest + 1, false);
  for (const auto& s : spellings) has_length[s.size()] = true;

  struct Merge {
    std::string_view left, right;
    double score;
    size_t left_chars, right_chars;
    size_t left_id, right_id;
  };
  std::vector<Merge> merges;
  std::vector<Merge> local;
  for (size_t first : first_order) {
    const std::string& token = spellings[first];
    const size_t id = last_id[token];
    double score = scores ? (*scores)[id] : static_cast<double>(id);
    if (std::isnan(score)) score = -INFINITY;  // a total order for hostile files
    const auto cps = code_points(token);
    local.clear();
    size_t offset = 0;
    for (size_t k = 1; k < cps.size(); ++k) {
      offset += cps[k - 1].second;
      if (!has_length[offset] || !has_length[token.size() - offset]) continue;
      work += token.size();
      if (work > budget)
        fail(path, "the vocabulary's tokens are too long and too many to derive merges from (no tokenizer.ggml.merges)");
      std::string_view left(token.data(), offset), right(token.data() + offset, token.size() - offset);
      auto l = last_id.find(left);
      if (l == last_id.end()) continue;
      auto r = last_id.find(right);
      if (r == last_id.end()) continue;
      local.push_back({l->first, r->first, score, k, cps.size() - k, l->second, r->second});
    }
    std::stable_sort(local.begin(), local.end(), [](const Merge& a, const Merge& b) {
      return std::tie(a.left_id, a.right_id) < std::tie(b.left_id, b.right_id);
    });
    merges.insert(merges.end(), local.begin(), local.end());
  }
  const bool descending = scores != nullptr;
  std::stable_sort(merges.begin(), merges.end(), [descending](const Merge& a, const Merge& b) {
    auto ka = std::tie(a.score, a.left_chars, a.right_chars);
    auto kb = std::tie(b.score, b.left_chars, b.right_chars);
    return descending ? kb < ka : ka < kb;
  });
  std::vector<std::pair<std::string, std::string>> out;
  out.reserve(merges.size());
  for (const auto& m : merges) out.emplace_back(std::string(m.left), std::string(m.right));
  return out;
}

// Text from the file for a message: at most 60 bytes, control bytes escaped.
std::string shown(std::string_view text) {
  std::string out;
  for (size_t i = 0; i < text.size() && i < 60; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c < 0x20 || c == 0x7f) {
      static const char* hex = "0123456789abcdef";
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  if (text.size() > 60) out += "...";
  return out;
}

std::vector<std::pair<std::string, std::string>> file_merges(const Vocab& v, const std::vector<std::string>& spellings) {
  std::unordered_map<std::string_view, size_t> known;
  known.reserve(spellings.size() * 2);
  for (size_t i = 0; i < spellings.size(); ++i) known.emplace(spellings[i], i);
  std::vector<std::pair<std::string, std::string>> out;
  out.reserve(v.merges->size());
  std::string joined;
  for (size_t i = 0; i < v.merges->size(); ++i) {
    const std::string& merge = (*v.merges)[i];
    // As llama.cpp: the first space after the first byte separates the two pieces (a piece may
    // itself start with a space).
    const size_t space = merge.size() > 1 ? merge.find(' ', 1) : std::string::npos;
    if (space == std::string::npos)
      fail(v.path, "tokenizer.ggml.merges entry " + std::to_string(i) + " is not two tokens separated by a space");
    std::string left = merge.substr(0, space), right = merge.substr(space + 1);
    // Hugging Face refuses a merge whose pieces or result are not tokens; so does this converter.
    joined = left + right;
    if (!known.count(left) || !known.count(right) || !known.count(joined))
      fail(v.path, "tokenizer.ggml.merges entry " + std::to_string(i) + " ('" + shown(merge) +
                       "') joins pieces that are not all tokens of the vocabulary");
    out.emplace_back(std::move(left), std::move(right));
  }
  return out;
}

std::vector<std::pair<std::string, std::string>> merges_for(const Vocab& v, const std::vector<std::string>& spellings) {
  if (v.merges) return file_merges(v, spellings);
  if (is_gemma(v)) {
    // Gemma's scores do not follow its merge order; the order of the tokens in the file does.
    std::vector<double> positions(spellings.size());
    for (size_t i = 0; i < positions.size(); ++i) positions[i] = -static_cast<double>(i);
    return generate_merges(spellings, &positions, v.path);
  }
  if (is_sentencepiece(v)) {
    std::vector<double> zeros;
    if (v.scores.empty()) zeros.assign(spellings.size(), 0.0);  // llama.cpp's default score
    return generate_merges(spellings, v.scores.empty() ? &zeros : &v.scores, v.path);
  }
  return generate_merges(spellings, nullptr, v.path);
}

std::optional<std::string> token_at(const std::vector<std::string>& spellings, const std::optional<int64_t>& id) {
  if (!id) return std::nullopt;
  return spellings[static_cast<size_t>(*id)];
}

// Whether BOS / EOS are added: the file's flags; without them, what llama.cpp does for the
// vocabulary type (SentencePiece and Llama-3-style vocabularies add BOS); never without a token.
std::pair<bool, bool> bos_eos_flags(const Vocab& v) {
  bool add_bos = false;
  if (v.add_bos) {
    add_bos = *v.add_bos;
  } else if (v.model == "llama") {
    add_bos = true;
  } else if (v.model == "gpt2") {
    add_bos = byte_level_pre_tokenizer(v.pre, v.path).add_bos;
  }
  if (v.model == "gemma4") add_bos = false;  // its chat template writes <bos> itself (transformers)
  bool add_eos = v.add_eos.value_or(false);
  if (!v.bos) add_bos = false;
  if (!v.eos) add_eos = false;
  return {add_bos, add_eos};
}

json post_processor(const std::optional<std::string>& bos, int64_t bos_id, bool add_bos,
                    const std::optional<std::string>& eos, int64_t eos_id, bool add_eos) {
  auto special = [](const std::string& token, int type_id) {
    return json{{"SpecialToken", {{"id", token}, {"type_id", type_id}}}};
  };
  auto sequence_of = [](const char* id, int type_id) { return json{{"Sequence", {{"id", id}, {"type_id", type_id}}}}; };
  json single = json::array(), pair = json::array();
  if (add_bos) single.push_back(special(*bos, 0));
  single.push_back(sequence_of("A", 0));
  if (add_eos) single.push_back(special(*eos, 0));
  pair = single;
  if (add_bos) pair.push_back(special(*bos, 1));
  pair.push_back(sequence_of("B", 1));
  if (add_eos) pair.push_back(special(*eos, 1));
  json specials = json::object();
  if (add_bos) specials[*bos] = {{"id", *bos}, {"ids", {bos_id}}, {"tokens", {*bos}}};
  if (add_eos) specials[*eos] = {{"id", *eos}, {"ids", {eos_id}}, {"tokens", {*eos}}};
  return {{"type", "TemplateProcessing"}, {"single", single}, {"pair", pair}, {"special_tokens", specials}};
}

}  // namespace

json gguf_tokenizer_json(const GgufFile& file) {
  const Vocab v = read_vocab(file);
  check_supported(v);
  const std::vector<std::string> spellings = model_spellings(v);
  const bool sentencepiece = is_sentencepiece(v);

  json model;
  model["type"] = "BPE";
  model["dropout"] = nullptr;
  json normalizer = nullptr, pre_tokenizer = nullptr, decoder;
  std::optional<int64_t> unk = v.unk;
  if (sentencepiece) {
    // llama.cpp's SentencePiece default: token 0 is the unknown token when the file marks it so.
    if (!unk && v.types[0] == kTypeUnknown) unk = 0;
    const bool prefix = v.model == "llama" && v.add_space_prefix && !is_gemma(v);
    json replace = {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", kSpace}};
    if (prefix)
      normalizer = {{"type", "Sequence"}, {"normalizers", {{{"type", "Prepend"}, {"prepend", kSpace}}, replace}}};
    else
      normalizer = replace;
    json steps = {{{"type", "Replace"}, {"pattern", {{"String", kSpace}}}, {"content", " "}},
                  {{"type", "ByteFallback"}},
                  {{"type", "Fuse"}}};
    if (prefix) steps.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
    decoder = {{"type", "Sequence"}, {"decoders", steps}};
    model["unk_token"] = unk ? json(spellings[static_cast<size_t>(*unk)]) : json(nullptr);
    model["continuing_subword_prefix"] = nullptr;
    model["end_of_word_suffix"] = nullptr;
    model["fuse_unk"] = true;
    model["byte_fallback"] = true;
    model["ignore_merges"] = false;
  } else {
    PreTokenizer pre = byte_level_pre_tokenizer(v.pre, v.path);
    pre_tokenizer = std::move(pre.json_value);
    decoder = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
    model["unk_token"] = nullptr;
    model["continuing_subword_prefix"] = "";
    model["end_of_word_suffix"] = "";
    model["fuse_unk"] = false;
    model["byte_fallback"] = false;
    model["ignore_merges"] = pre.ignore_merges;
  }

  json vocab = json::object();
  for (size_t i = 0; i < spellings.size(); ++i) vocab[spellings[i]] = i;  // a repeated spelling keeps its last id
  model["vocab"] = std::move(vocab);
  json merges = json::array();
  for (auto& [left, right] : merges_for(v, spellings)) merges.push_back({std::move(left), std::move(right)});
  model["merges"] = std::move(merges);

  // Added tokens: control tokens and the named special tokens are special; user-defined ones
  // (e.g. MPT's runs of spaces, "<think>") are matched whole in the text but are not special.
  // A named token the file types as a normal token (say a padding id pointing at a word) stays
  // an ordinary token, as in llama.cpp; without token types every named token is special.
  json added = json::array();
  for (size_t i = 0; i < spellings.size(); ++i) {
    const auto id = static_cast<int64_t>(i);
    const bool named = (id == v.bos || id == v.eos || id == unk || id == v.pad) && (!v.has_types || v.types[i] != 1);
    const bool control = v.types[i] == kTypeControl;
    const bool user = v.types[i] == kTypeUserDefined;
    if (!named && !control && !user) continue;
    added.push_back({{"id", id},
                     {"content", spellings[i]},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", named || control}});
  }

  const auto [add_bos, add_eos] = bos_eos_flags(v);
  json out;
  out["version"] = "1.0";
  out["truncation"] = nullptr;
  out["padding"] = nullptr;
  out["added_tokens"] = std::move(added);
  out["normalizer"] = std::move(normalizer);
  out["pre_tokenizer"] = std::move(pre_tokenizer);
  out["post_processor"] = post_processor(token_at(spellings, v.bos), v.bos.value_or(0), add_bos,
                                         token_at(spellings, v.eos), v.eos.value_or(0), add_eos);
  out["decoder"] = std::move(decoder);
  out["model"] = std::move(model);
  return out;
}

json gguf_tokenizer_config(const GgufFile& file) {
  const Vocab v = read_vocab(file);
  check_supported(v);
  const std::vector<std::string> spellings = model_spellings(v);
  std::optional<int64_t> unk = v.unk;
  if (is_sentencepiece(v) && !unk && v.types[0] == kTypeUnknown) unk = 0;
  auto token_or_null = [&](const std::optional<int64_t>& id) {
    auto token = token_at(spellings, id);
    return token ? json(*token) : json(nullptr);
  };
  const auto [add_bos, add_eos] = bos_eos_flags(v);
  json config;
  config["bos_token"] = token_or_null(v.bos);
  config["eos_token"] = token_or_null(v.eos);
  config["unk_token"] = token_or_null(unk);
  config["pad_token"] = token_or_null(v.pad);
  config["add_bos_token"] = add_bos;
  config["add_eos_token"] = add_eos;
  if (auto chat_template = file.find_string("tokenizer.chat_template")) config["chat_template"] = *chat_template;
  return config;
}

}  // namespace lw
