// libFuzzer target: the input is a whole tokenizer.json (Hugging Face tokenizers schema, as a model
// download brings it). It is parsed as Tokenizer::from_directory parses the file and loaded with
// Tokenizer::from_json; a tokenizer that loads then encodes a few texts (with and without special
// tokens, its own added tokens among them) and decodes what it gave, in one go and streaming, so
// the normalizers, pre-tokenizers, regexes, BPE merges and decoders run on what the file built.
// lw::Error is the expected outcome for bad input or an id the file's post-processor invents; any
// other exception, a sanitizer report, or an id that decode cannot name while encode gave it
// from the vocabulary is a finding.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "tokenizer/tokenizer.h"

namespace {

[[noreturn]] void invariant_broken(const char* what) {
  std::fprintf(stderr, "fuzz_tokenizer_json: invariant broken: %s\n", what);
  std::abort();
}

// Texts that reach the usual paths: spaces and punctuation for the pre-tokenizers, digits,
// accents and CJK for normalizers and byte fallback, an emoji for 4-byte UTF-8, common specials.
const char* const kTexts[] = {
    "Hello, world! It's 2024.",
    "  leading and trailing  \t\n",
    "na\xc3\xafve caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xf0\x9f\x98\x80",
    "<s>a</s><|endoftext|><unk> [CLS]",
    "",
};

void round_trip(const lw::Tokenizer& tokenizer, std::string_view text, bool add_special, bool parse_special) {
  std::vector<int32_t> ids;
  try {
    ids = tokenizer.encode(text, add_special, parse_special);
  } catch (const lw::Error&) {
    return;  // e.g. a missing unk token, named with the file
  }
  for (bool skip_special : {false, true}) {
    try {
      (void)tokenizer.decode(ids, skip_special);
      lw::StreamingDecoder stream(tokenizer, skip_special);
      for (int32_t id : ids) (void)stream.push(id);
      (void)stream.finish();
    } catch (const lw::Error&) {
      // Only the post-processor can give an id that is not in the vocabulary.
      if (!add_special) invariant_broken("decode refused an id that encode gave without special tokens");
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(bytes.begin(), bytes.end());
  } catch (const nlohmann::json::exception&) {
    return 0;  // from_directory reports this as "malformed JSON"
  }
  std::optional<lw::Tokenizer> tokenizer;
  try {
    tokenizer.emplace(lw::Tokenizer::from_json(json, nullptr, "fuzz/tokenizer.json"));
  } catch (const lw::Error&) {
    return 0;  // rejected with a message: the expected outcome for bad input
  }
  if (tokenizer->vocab_size() < 0) invariant_broken("negative vocab_size");
  std::vector<std::string> texts(std::begin(kTexts), std::end(kTexts));
  // The file's own added tokens, inside text: the added-token matching (lstrip, rstrip,
  // single_word, normalized) only runs on what it can find.
  if (auto added = json.find("added_tokens"); added != json.end() && added->is_array()) {
    size_t taken = 0;
    for (const auto& token : *added) {
      if (taken == 4) break;
      if (!token.is_object() || !token.contains("content") || !token["content"].is_string()) continue;
      texts.push_back("x " + token["content"].get<std::string>() + " y" + token["content"].get<std::string>());
      ++taken;
    }
  }
  for (const std::string& text : texts)
    for (bool add_special : {false, true})
      for (bool parse_special : {false, true}) round_trip(*tokenizer, text, add_special, parse_special);
  return 0;
}
