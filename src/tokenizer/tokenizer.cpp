#include "tokenizer/tokenizer.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <unordered_map>
#include <unordered_set>

#include "common/error.h"
#include "common/file.h"
#include "tokenizer/bpe.h"
#include "tokenizer/pipeline.h"
#include "tokenizer/unicode.h"

namespace lw {

using nlohmann::json;
using namespace tok;

namespace {

struct AddedToken {
  std::string content;
  std::string normalized_content;  // what id -> token gives (the Rust library: the normalized form)
  int32_t id = -1;
  int64_t file_id = -1;  // the "id" the file gives; `id` may differ (see load_added_tokens)
  bool special = false, lstrip = false, rstrip = false, single_word = false, normalized = true;
};

// Byte trie over added-token contents: leftmost-longest matching, as the Rust library's
// Aho-Corasick automaton (MatchKind::LeftmostLongest).
class Trie {
 public:
  void insert(std::string_view key, size_t value) {
    if (key.empty()) return;
    if (nodes_.empty()) nodes_.emplace_back();
    first_[static_cast<unsigned char>(key[0])] = true;
    size_t node = 0;
    for (char c : key) {
      auto b = static_cast<unsigned char>(c);
      int32_t next = child(node, b);
      if (next < 0) {
        next = static_cast<int32_t>(nodes_.size());
        nodes_[node].children.push_back({b, next});
        nodes_.emplace_back();
      }
      node = static_cast<size_t>(next);
    }
    if (nodes_[node].value < 0) nodes_[node].value = static_cast<int64_t>(value);  // first pattern wins ties
  }
  bool empty() const { return nodes_.empty(); }
  // The longest key starting at text[pos]: (length, value), length 0 when none.
  std::pair<size_t, size_t> longest_at(std::string_view text, size_t pos) const {
    if (!first_[static_cast<unsigned char>(text[pos])]) return {0, 0};
    size_t node = 0, best_len = 0, best_value = 0;
    for (size_t i = pos; i < text.size(); ++i) {
      int32_t next = child(node, static_cast<unsigned char>(text[i]));
      if (next < 0) break;
      node = static_cast<size_t>(next);
      if (nodes_[node].value >= 0) {
        best_len = i + 1 - pos;
        best_value = static_cast<size_t>(nodes_[node].value);
      }
    }
    return {best_len, best_value};
  }

 private:
  struct Node {
    std::vector<std::pair<unsigned char, int32_t>> children;
    int64_t value = -1;
  };
  int32_t child(size_t node, unsigned char b) const {
    for (auto& [k, v] : nodes_[node].children)
      if (k == b) return v;
    return -1;
  }
  std::vector<Node> nodes_;
  bool first_[256] = {};
};

struct Segment {
  size_t begin, end;
  int32_t id;  // -1: text
};

bool ends_with_word(std::string_view s) {
  if (s.empty()) return false;
  size_t start = s.size() - 1;
  while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
  size_t len;
  return is_rust_word(decode_utf8(s, start, len));
}

bool starts_with_word(std::string_view s) {
  if (s.empty()) return false;
  size_t len;
  return is_rust_word(decode_utf8(s, 0, len));
}

// A whole number from 0 to `max` (a JSON integer, whether parsed or built as signed).
bool is_id_up_to(const json& value, uint64_t max) {
  if (value.is_number_unsigned()) return value.get<uint64_t>() <= max;
  return value.is_number_integer() && value.get<int64_t>() >= 0 && static_cast<uint64_t>(value.get<int64_t>()) <= max;
}

json parse_json_file(const std::string& path) {
  std::string text = read_file_text(path);
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    fail(path, std::string("malformed JSON: ") + e.what());
  }
}

// A special token in tokenizer_config.json: "<s>", {"content": "<s>", ...} or null.
std::optional<std::string> special_token(const json& config, const char* key) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object()) {
    auto c = it->find("content");
    if (c != it->end() && c->is_string()) return c->get<std::string>();
  }
  return std::nullopt;
}

}  // namespace

struct Tokenizer::Impl {
  std::string source;
  std::unique_ptr<Normalizer> normalizer;
  std::unique_ptr<PreTokenizer> pre_tokenizer;
  std::unique_ptr<BpeModel> model;
  std::unique_ptr<Decoder> decoder;
  std::vector<int32_t> prefix_ids, suffix_ids;  // what add_special_tokens adds around the text

  std::vector<AddedToken> added;                 // in the order the Rust library matches them
  std::unordered_map<int32_t, size_t> added_by_id;
  StringMap added_by_content;
  std::unordered_set<std::string> special_contents;
  Trie raw_trie, normalized_trie;  // values: index into `added`

  TokenizerConfig config;
  int32_t vocab_size = 0;
  std::optional<int32_t> bos, eos;

  void find_added(std::string_view text, const Trie& trie, bool parse_special, std::vector<Segment>& out) const;
  std::vector<int32_t> encode_valid(std::string_view text, bool add_special_tokens, bool parse_special) const;
  const std::string* id_to_token(int32_t id) const {
    if (auto it = added_by_id.find(id); it != added_by_id.end()) return &added[it->second].normalized_content;
    return model->id_to_token(id);
  }
  std::optional<int32_t> token_to_id(std::string_view token) const {
    if (auto it = added_by_content.find(token); it != added_by_content.end()) return it->second;
    return model->token_to_id(token);
  }
  void load_added_tokens(const json& list);
  void load_post_processor(const json& j);
  void apply_config(const json& config);
};

void Tokenizer::Impl::find_added(std::string_view text, const Trie& trie, bool parse_special,
                                 std::vector<Segment>& out) const {
  size_t start_offset = 0;
  if (!trie.empty()) {
    size_t pos = 0;
    while (pos < text.size()) {
      auto [len, index] = trie.longest_at(text, pos);
      if (len == 0) {
        ++pos;
        continue;
      }
      size_t start = pos, stop = pos + len;
      pos = stop;  // the automaton resumes after the match, whatever is done with it
      const AddedToken& token = added[index];
      if (token.special && !parse_special) continue;
      if (token.single_word) {
        bool start_ok = start == 0 || !ends_with_word(text.substr(0, start));
        bool stop_ok = stop == text.size() || !starts_with_word(text.substr(stop));
        if (!start_ok || !stop_ok) continue;
      }
      if (token.lstrip) {
        size_t s = start;
        while (s > 0) {
          size_t b = s - 1;
          while (b > 0 && (static_cast<unsigned char>(text[b]) & 0xC0) == 0x80) --b;
          size_t l;
          if (!is_white_space(decode_utf8(text, b, l))) break;
          s = b;
        }
        start = std::max(s, start_offset);
      }
      if (token.rstrip) {
        while (stop < text.size()) {
          size_t l;
          if (!is_white_space(decode_utf8(text, stop, l))) break;
          stop += l;
        }
      }
      if (start_offset < start) out.push_back({start_offset, start, -1});
      out.push_back({start, stop, token.id});
      start_offset = stop;
    }
  }
  if (start_offset < text.size()) out.push_back({start_offset, text.size(), -1});
}

void Tokenizer::Impl::load_added_tokens(const json& list) {
  if (list.is_null()) return;
  if (!list.is_array()) fail(source, "\"added_tokens\" must be an array");
  // As AddedVocabulary::add_tokens: an id is the model's id for the content, else the next one
  // after the model vocabulary and the tokens added so far. The file's "id" is checked (the Rust
  // library refuses one that is not a u32) but not used: it only warns when it differs.
  const int32_t model_size = model->size();
  std::vector<AddedToken> specials, normals;
  for (auto& t : list) {
    if (!t.is_object() || !t.contains("content") || !t["content"].is_string())
      fail(source, "added token without a \"content\" string: " + t.dump());
    AddedToken token;
    token.content = t["content"].get<std::string>();
    auto file_id = t.find("id");
    if (file_id == t.end())
      fail(source, "added token \"" + token.content + "\" has no \"id\"");
    if (!is_id_up_to(*file_id, UINT32_MAX))
      fail(source, "added token \"" + token.content + "\" has the id " + file_id->dump() +
                       ": ids are whole numbers from 0 to 4294967295");
    token.file_id = file_id->get<int64_t>();
    auto flag = [&](const char* key, bool fallback) {
      auto it = t.find(key);
      return it != t.end() && it->is_boolean() ? it->get<bool>() : fallback;
    };
    token.special = flag("special", false);
    token.lstrip = flag("lstrip", false);
    token.rstrip = flag("rstrip", false);
    token.single_word = flag("single_word", false);
    token.normalized = flag("normalized", !token.special);
    if (token.content.empty()) continue;
    if (valid_utf8_prefix(token.content) != token.content.size()) fail(source, "added token is not valid UTF-8");
    if (auto it = added_by_content.find(token.content); it != added_by_content.end()) {
      token.id = it->second;
    } else if (auto id = model->token_to_id(token.content)) {
      token.id = *id;
    } else {
      int32_t max_added = -1;
      for (auto& [content, id2] : added_by_content) max_added = std::max(max_added, id2);
      token.id = max_added < 0 ? model_size : (max_added >= model_size || model_size == 0 ? max_added + 1 : model_size);
    }
    added_by_content[token.content] = token.id;
    if (token.special) special_contents.insert(token.content);
    // The latest definition of an id wins.
    bool replaced = false;
    for (auto* group : {&specials, &normals})
      for (auto& old : *group)
        if (old.content == token.content) {
          old = token;
          replaced = true;
        }
    if (!replaced) (special_contents.count(token.content) ? specials : normals).push_back(token);
  }
  added = std::move(specials);
  added.insert(added.end(), normals.begin(), normals.end());
  for (size_t i = 0; i < added.size(); ++i) {
    added_by_id[added[i].id] = i;
    AddedToken& t = added[i];
    t.normalized_content = t.content;
    if (!t.normalized) {
      raw_trie.insert(t.content, i);
    } else {
      size_t lead = 0;
      if (normalizer) normalizer->normalize(t.normalized_content, lead);
      normalized_trie.insert(t.normalized_content, i);
    }
  }
}

void Tokenizer::Impl::load_post_processor(const json& j) {
  if (j.is_null()) return;
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string())
    fail(source, "post_processor has no \"type\"");
  std::string type = j["type"].get<std::string>();
  // The Rust library reads these ids as u32; ours are int32.
  auto token_id = [&](const json& id, const std::string& where) {
    if (!is_id_up_to(id, INT32_MAX))
      fail(source, type + " " + where + " has the id " + id.dump() + ": ids are whole numbers from 0 to 2147483647");
    return id.get<int32_t>();
  };
  auto special_ids = [&](const std::string& name) -> std::vector<int32_t> {
    auto it = j.find("special_tokens");
    if (it != j.end() && it->is_object()) {
      auto t = it->find(name);
      if (t != it->end() && t->is_object() && t->contains("ids") && (*t)["ids"].is_array()) {
        std::vector<int32_t> ids;
        for (auto& id : (*t)["ids"]) ids.push_back(token_id(id, "special token \"" + name + "\""));
        return ids;
      }
    }
    fail(source, "TemplateProcessing uses the special token \"" + name + "\" but does not define it");
  };
  if (type == "TemplateProcessing") {
    auto single = j.find("single");
    if (single == j.end()) fail(source, "TemplateProcessing has no \"single\" template");
    std::vector<int32_t> before, after;
    bool seen_a = false;
    auto add_special = [&](const std::string& name) {
      auto ids = special_ids(name);
      auto& dst = seen_a ? after : before;
      dst.insert(dst.end(), ids.begin(), ids.end());
    };
    if (single->is_string()) {  // "<s>:0 $A:0 </s>:0"
      std::istringstream words(single->get<std::string>());
      std::string w;
      while (words >> w) {
        if (w[0] == '$') {
          seen_a = seen_a || w.rfind("$A", 0) == 0 || w == "$" || w.rfind("$:", 0) == 0 ||
                   (w.size() > 1 && std::isdigit(static_cast<unsigned char>(w[1])));
          continue;
        }
        auto colon = w.rfind(':');
        add_special(colon == std::string::npos ? w : w.substr(0, colon));
      }
    } else if (single->is_array()) {
      for (auto& piece : *single) {
        if (piece.contains("Sequence")) {
          seen_a = true;
        } else if (piece.contains("SpecialToken") && piece["SpecialToken"].is_object() &&
                   piece["SpecialToken"].contains("id") && piece["SpecialToken"]["id"].is_string()) {
          add_special(piece["SpecialToken"]["id"].get<std::string>());
        } else {
          fail(source, "TemplateProcessing piece " + piece.dump() + " is neither Sequence nor SpecialToken");
        }
      }
    } else {
      fail(source, "TemplateProcessing \"single\" must be a list or a string");
    }
    prefix_ids.insert(prefix_ids.begin(), before.begin(), before.end());
    suffix_ids.insert(suffix_ids.end(), after.begin(), after.end());
  } else if (type == "ByteLevel") {
    // Offsets only.
  } else if (type == "RobertaProcessing" || type == "BertProcessing") {
    auto id_of = [&](const char* key) {
      auto it = j.find(key);
      if (it == j.end() || !it->is_array() || it->size() != 2) fail(source, type + " has no \"" + key + "\" pair");
      return token_id((*it)[1], std::string("\"") + key + "\"");
    };
    prefix_ids.insert(prefix_ids.begin(), id_of("cls"));
    suffix_ids.push_back(id_of("sep"));
  } else if (type == "Sequence") {
    auto it = j.find("processors");
    if (it == j.end() || !it->is_array()) fail(source, "Sequence post_processor has no \"processors\" list");
    for (auto& p : *it) load_post_processor(p);
  } else {
    fail(source, "unsupported post_processor type \"" + type + "\"");
  }
}

void Tokenizer::Impl::apply_config(const json& c) {
  if (c.is_null()) return;
  if (!c.is_object()) fail(source, "tokenizer_config.json must be a JSON object");
  config.bos_token = special_token(c, "bos_token");
  config.eos_token = special_token(c, "eos_token");
  config.unk_token = special_token(c, "unk_token");
  config.pad_token = special_token(c, "pad_token");
  auto flag = [&](const char* key) -> std::optional<bool> {
    auto it = c.find(key);
    if (it == c.end()) return std::nullopt;
    return it->is_boolean() && it->get<bool>();  // null counts as false, as transformers' kwargs.get
  };
  config.add_bos_token = flag("add_bos_token");
  config.add_eos_token = flag("add_eos_token");
  if (auto it = c.find("chat_template"); it != c.end()) {
    if (it->is_string()) {
      config.chat_template = it->get<std::string>();
    } else if (it->is_array()) {
      for (auto& t : *it)
        if (t.is_object() && t.value("name", std::string()) == "default" && t.contains("template") &&
            t["template"].is_string())
          config.chat_template = t["template"].get<std::string>();
    }
  }
  if (config.bos_token) bos = token_to_id(*config.bos_token);
  if (config.eos_token) eos = token_to_id(*config.eos_token);
  // transformers 5 (TokenizersBackend.update_post_processor): when either flag is given, the
  // post-processor becomes "[bos] $A [eos]" with the missing flag taken as false.
  if (config.add_bos_token || config.add_eos_token) {
    if (!config.add_bos_token) config.add_bos_token = false;
    if (!config.add_eos_token) config.add_eos_token = false;
    prefix_ids.clear();
    suffix_ids.clear();
    if (*config.add_bos_token && config.bos_token) {
      if (!bos) fail(source, "bos_token \"" + *config.bos_token + "\" is not in the vocabulary");
      prefix_ids.push_back(*bos);
    }
    if (*config.add_eos_token && config.eos_token) {
      if (!eos) fail(source, "eos_token \"" + *config.eos_token + "\" is not in the vocabulary");
      suffix_ids.push_back(*eos);
    }
  }
}

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::from_json(const json& tokenizer, const json& config, const std::string& source) {
  auto impl = std::make_unique<Impl>();
  impl->source = source;
  if (!tokenizer.is_object()) fail(source, "tokenizer.json must be a JSON object");
  auto get = [&](const char* key) -> const json& {
    static const json null_value;
    auto it = tokenizer.find(key);
    return it == tokenizer.end() ? null_value : *it;
  };
  const json& model = get("model");
  if (!model.is_object()) fail(source, "no \"model\" object");
  std::string model_type = model.contains("type") && model["type"].is_string() ? model["type"].get<std::string>()
                           : model.contains("merges")                          ? "BPE"
                                                                               : "";
  if (model_type != "BPE")
    fail(source, "unsupported model type \"" + model_type + "\" (only BPE is implemented)");
  try {
    impl->model = std::make_unique<BpeModel>(model, source);
    impl->normalizer = make_normalizer(get("normalizer"));
    impl->pre_tokenizer = make_pre_tokenizer(get("pre_tokenizer"));
    impl->decoder = make_decoder(get("decoder"));
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    fail(source, e.what());
  }
  impl->load_added_tokens(get("added_tokens"));
  impl->load_post_processor(get("post_processor"));
  impl->apply_config(config);
  int32_t max_id = impl->model->max_id();
  for (auto& t : impl->added) max_id = std::max(max_id, t.id);
  impl->vocab_size = max_id + 1;
  return Tokenizer(std::move(impl));
}

Tokenizer Tokenizer::from_directory(const std::string& dir) {
  std::string path = dir + "/tokenizer.json";
  json tokenizer = parse_json_file(path);
  json config;
  std::string config_path = dir + "/tokenizer_config.json";
  if (std::filesystem::exists(config_path)) {
    config = parse_json_file(config_path);
    // transformers 5 drops add_bos_token / add_eos_token from tokenizer_config.json when a
    // tokenizer.json is present: its post-processor alone decides (PreTrainedTokenizerBase.
    // _from_pretrained). They decide only where the config comes without one (GGUF metadata).
    if (config.is_object()) {
      config.erase("add_bos_token");
      config.erase("add_eos_token");
    }
  }
  // transformers 5 writes the chat template to its own file.
  std::string jinja = dir + "/chat_template.jinja";
  if (std::filesystem::exists(jinja) && (config.is_null() || !config.contains("chat_template"))) {
    if (config.is_null()) config = json::object();
    config["chat_template"] = read_file_text(jinja);
  }
  return from_json(tokenizer, config, path);
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens, bool parse_special) const {
  const Impl& m = *impl_;
  size_t valid = valid_utf8_prefix(text);
  if (valid != text.size())
    fail("cannot tokenize text that is not valid UTF-8 (invalid byte 0x" +
         [&] {
           static const char* hex = "0123456789abcdef";
           auto b = static_cast<unsigned char>(text[valid]);
           return std::string{hex[b >> 4], hex[b & 15]};
         }() +
         " at offset " + std::to_string(valid) + ")");

  try {
    return m.encode_valid(text, add_special_tokens, parse_special);
  } catch (const Error&) {
    throw;
  } catch (const std::runtime_error& e) {  // a regex that ran out of resources, an unk token missing
    fail(m.source, e.what());
  }
}

std::vector<int32_t> Tokenizer::Impl::encode_valid(std::string_view text, bool add_special_tokens,
                                                   bool parse_special) const {
  const Impl& m = *this;
  std::vector<int32_t> ids;
  if (add_special_tokens) ids = m.prefix_ids;

  // 1. Added tokens matched on the raw text, 2. normalization of the rest, 3. added tokens
  // matched on the normalized text.
  Pieces pieces;
  pieces.buf.reserve(text.size() + text.size() / 4 + 16);
  std::vector<Segment> raw, normalized;
  m.find_added(text, m.raw_trie, parse_special, raw);
  std::string piece;
  for (const Segment& seg : raw) {
    if (seg.id >= 0) {
      pieces.items.push_back({0, 0, seg.id, false});
      continue;
    }
    piece.assign(text.substr(seg.begin, seg.end - seg.begin));
    size_t lead = seg.begin == 0 && !piece.empty() ? utf8_len(static_cast<unsigned char>(piece[0])) : 0;
    if (m.normalizer) m.normalizer->normalize(piece, lead);
    normalized.clear();
    m.find_added(piece, m.normalized_trie, parse_special, normalized);
    for (const Segment& n : normalized) {
      if (n.id >= 0) {
        pieces.items.push_back({0, 0, n.id, false});
        continue;
      }
      auto begin = static_cast<uint32_t>(pieces.buf.size());
      pieces.buf.append(piece, n.begin, n.end - n.begin);
      pieces.items.push_back({begin, static_cast<uint32_t>(pieces.buf.size()), -1, n.begin < lead});
    }
  }

  // 4. Pre-tokenization.
  Pieces words;
  if (m.pre_tokenizer) {
    PreTokenizeScratch scratch;
    m.pre_tokenizer->pre_tokenize(pieces, words, scratch);
  } else {
    std::swap(pieces, words);
  }

  // 5. The model.
  ids.reserve(ids.size() + words.buf.size() / 3 + words.items.size());
  for (const Piece& p : words.items) {
    if (p.added >= 0)
      ids.push_back(p.added);
    else
      m.model->tokenize(words.text(p), ids);
  }
  if (add_special_tokens) ids.insert(ids.end(), m.suffix_ids.begin(), m.suffix_ids.end());
  return ids;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  const Impl& m = *impl_;
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    const std::string* token = m.id_to_token(id);
    if (!token)
      fail(m.source, "cannot decode id " + std::to_string(id) + ": not in the vocabulary (size " +
                         std::to_string(m.vocab_size) + ")");
    if (skip_special_tokens && m.special_contents.count(*token)) continue;
    tokens.push_back(*token);
  }
  if (!m.decoder) {
    std::string out;
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (i) out += ' ';
      out += tokens[i];
    }
    return out;
  }
  m.decoder->decode_chain(tokens);
  std::string out;
  for (auto& t : tokens) out += t;
  return out;
}

std::string Tokenizer::piece(int32_t id) const {
  const std::string* token = impl_->id_to_token(id);
  if (!token) fail(impl_->source, "id " + std::to_string(id) + " is not in the vocabulary");
  return *token;
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view piece) const { return impl_->token_to_id(piece); }
int32_t Tokenizer::vocab_size() const { return impl_->vocab_size; }

void Tokenizer::check_fits_model(int32_t model_vocab_size) const {
  const Impl& m = *impl_;
  const std::string outside = " is outside the model's vocabulary of " + std::to_string(model_vocab_size) +
                              " tokens (ids 0.." + std::to_string(model_vocab_size - 1) + ")";
  for (const AddedToken& token : m.added) {
    if (token.id < model_vocab_size) continue;
    std::string numbering = "id " + std::to_string(token.id);
    if (token.file_id != token.id)
      numbering += "; the file says " + std::to_string(token.file_id) +
                   ", but as in Hugging Face tokenizers an added token not in the model vocabulary is numbered "
                   "after it";
    fail(m.source, "added token \"" + token.content + "\" (" + numbering + ")" + outside);
  }
  if (m.model->max_id() >= model_vocab_size)
    fail(m.source, "vocab token \"" + *m.model->id_to_token(m.model->max_id()) + "\" (id " +
                       std::to_string(m.model->max_id()) + ")" + outside);
  for (const auto* ids : {&m.prefix_ids, &m.suffix_ids})
    for (int32_t id : *ids)
      if (id >= model_vocab_size) fail(m.source, "post_processor adds the id " + std::to_string(id) + outside);
}
std::optional<int32_t> Tokenizer::bos_id() const { return impl_->bos; }
std::optional<int32_t> Tokenizer::eos_id() const { return impl_->eos; }
const TokenizerConfig& Tokenizer::config() const { return impl_->config; }

// ---- StreamingDecoder ----
//
// Decodes the whole sequence at every step (decoders such as Strip or Metaspace act on the start
// of the text, so a window of recent ids would not give the same text) and returns what is new,
// holding back what can still change:
//  - a trailing run of byte tokens (<0xXX>) that is not yet valid UTF-8: ByteFallback turns a
//    whole run into U+FFFDs when it is invalid, including characters it completed earlier;
//  - a trailing run of U+FFFD (ByteLevel: bytes of a character whose other bytes have not come).

namespace {
constexpr std::string_view kReplacement = "\xEF\xBF\xBD";

size_t complete_prefix(const std::string& text) {
  size_t end = text.size();
  while (end >= kReplacement.size() && std::string_view(text).substr(end - kReplacement.size()) == kReplacement)
    end -= kReplacement.size();
  return end;
}

int byte_token(const std::string& piece) {
  if (piece.size() != 6 || piece.compare(0, 3, "<0x") != 0 || piece[5] != '>') return -1;
  int value = 0;
  for (size_t i = 3; i < 5; ++i) {
    char c = piece[i];
    int digit = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (digit < 0) return -1;
    value = value * 16 + digit;
  }
  return value;
}
}  // namespace

StreamingDecoder::StreamingDecoder(const Tokenizer& tokenizer, bool skip_special_tokens)
    : tokenizer_(tokenizer), skip_special_(skip_special_tokens) {}

std::string StreamingDecoder::push(int32_t id) {
  (void)tokenizer_.piece(id);  // throws for an id outside the vocabulary, before it is kept
  ids_.push_back(id);
  size_t stable = ids_.size();
  std::string run;
  while (stable > 0) {
    int byte = byte_token(tokenizer_.piece(ids_[stable - 1]));
    if (byte < 0) break;
    run.insert(run.begin(), static_cast<char>(byte));
    --stable;
  }
  if (valid_utf8_prefix(run) == run.size()) stable = ids_.size();
  std::vector<int32_t> prefix(ids_.begin(), ids_.begin() + static_cast<std::ptrdiff_t>(stable));
  std::string text = tokenizer_.decode(prefix, skip_special_);
  size_t end = complete_prefix(text);
  // Should a decoder have rewritten text already emitted, at least never cut a character.
  while (emitted_ < end && (static_cast<unsigned char>(text[emitted_]) & 0xC0) == 0x80) ++emitted_;
  if (end <= emitted_) return {};
  std::string out = text.substr(emitted_, end - emitted_);
  emitted_ = end;
  return out;
}

std::string StreamingDecoder::finish() {
  std::string text = tokenizer_.decode(ids_, skip_special_);
  while (emitted_ < text.size() && (static_cast<unsigned char>(text[emitted_]) & 0xC0) == 0x80) ++emitted_;
  if (text.size() <= emitted_) return {};
  std::string out = text.substr(emitted_);
  emitted_ = text.size();
  return out;
}

}  // namespace lw
