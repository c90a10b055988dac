// Text <-> token ids, exactly as the model's own tokenizer does it. One object, built from the
// Hugging Face tokenizers schema (tokenizer.json) whatever the source: a tokenizer.json file, or
// a GGUF vocabulary converted to that schema (src/gguf).
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace lw {

// What tokenizer_config.json (or GGUF metadata) adds to tokenizer.json.
struct TokenizerConfig {
  std::optional<bool> add_bos_token, add_eos_token;  // unset: follow the post-processor
  std::optional<std::string> bos_token, eos_token, unk_token, pad_token;
  std::string chat_template;  // empty when there is none
};

class Tokenizer {
 public:
  // `tokenizer` is the parsed tokenizer.json; `config` the parsed tokenizer_config.json (or null).
  // Throws lw::Error naming `source` and the problem (e.g. an unknown component type by name).
  static Tokenizer from_json(const nlohmann::json& tokenizer, const nlohmann::json& config, const std::string& source);
  // When `config` has add_bos_token or add_eos_token, they decide what add_special_tokens adds
  // (transformers 5's update_post_processor: "[bos] $A [eos]", a missing flag counting as false).
  //
  // Reads DIR/tokenizer.json and DIR/tokenizer_config.json (if present), and chat_template.jinja
  // when the config has no chat_template. As transformers 5, add_bos_token/add_eos_token in
  // tokenizer_config.json are ignored there: tokenizer.json's post-processor decides.
  static Tokenizer from_directory(const std::string& dir);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // add_special_tokens: apply the post-processor / add_bos_token as transformers'
  // tokenizer(text) does. parse_special: recognise special added tokens in the text (off by
  // default: user text never turns into control tokens unless asked). Throws lw::Error on
  // invalid UTF-8.
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens, bool parse_special = false) const;
  // As transformers' decode(ids, skip_special_tokens). Throws lw::Error for ids outside the vocabulary.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const;
  // The vocabulary string of one id (as stored, e.g. "▁the" or "Ġthe").
  std::string piece(int32_t id) const;
  std::optional<int32_t> token_to_id(std::string_view piece) const;
  int32_t vocab_size() const;  // including added tokens
  // For a model run: throws lw::Error naming the tokenizer's file, the token and its id when an
  // id this tokenizer can produce (vocabulary, added tokens, post-processor) has no row in the
  // model's embedding of `model_vocab_size` rows.
  void check_fits_model(int32_t model_vocab_size) const;
  std::optional<int32_t> bos_id() const;
  std::optional<int32_t> eos_id() const;
  const TokenizerConfig& config() const;

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Turns generated ids into text as they come, printing only complete UTF-8: what decode() of all
// ids so far would give, minus what was already emitted.
class StreamingDecoder {
 public:
  explicit StreamingDecoder(const Tokenizer& tokenizer, bool skip_special_tokens = true);
  // The newly completed text after adding `id` (possibly empty while a character is incomplete).
  std::string push(int32_t id);
  // Whatever remains at the end (an incomplete character is emitted as U+FFFD, as decode() would).
  std::string finish();

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_;
  std::vector<int32_t> ids_;
  size_t emitted_ = 0;  // bytes of decode(ids_) already returned
};

}  // namespace lw
