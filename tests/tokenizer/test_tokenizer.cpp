// Behaviour beyond the goldens: configuration, streaming, errors, the regex dialect.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>
#include <unistd.h>

#include "common/error.h"
#include "tok_helpers.h"
#include "tokenizer/regex.h"
#include "tokenizer/tokenizer.h"

namespace {

using nlohmann::json;
using lw::Tokenizer;
using lw::tok_test::fixtures;
using lw::tok_test::load_json;
using lw::tok_test::source_path;

Tokenizer fixture(const std::string& name) { return Tokenizer::from_directory(fixtures() + "/" + name); }
Tokenizer stories() { return Tokenizer::from_directory(source_path("models/stories260K")); }

class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "lw-tokenizer-XXXXXX").string();
    path_ = mkdtemp(pattern.data());
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string file(const std::string& name, const std::string& content) const {
    std::string p = path_ + "/" + name;
    std::ofstream(p, std::ios::binary) << content;
    return p;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// The error message of `f`, or "" when it does not throw lw::Error.
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const lw::Error& e) {
    return e.what();
  }
  return "";
}

#define EXPECT_ERROR_MENTIONS(statement, ...)                                       \
  do {                                                                              \
    std::string message_ = error_of([&] { (void)(statement); });                    \
    EXPECT_FALSE(message_.empty()) << #statement " did not throw lw::Error";        \
    for (const char* part_ : {__VA_ARGS__})                                         \
      EXPECT_NE(message_.find(part_), std::string::npos) << "\"" << message_ << "\" lacks \"" << part_ << "\""; \
  } while (0)

// ---- configuration ----

TEST(TokenizerConfig, FlagsDecideWhenGivenToFromJson) {
  // Checked against transformers 5 (TokenizersBackend with explicit add_bos_token/add_eos_token).
  size_t checked = 0;
  for (const char* name : {"stories260K", "syn-metaspace-first", "syn-qwen2"}) {
    json golden = load_json(fixtures() + "/" + name + "/goldens.json");
    json tokenizer_json = load_json(source_path(golden["dir"].get<std::string>() + "/tokenizer.json"));
    for (const json& c : golden["flag_cases"]) {
      Tokenizer tok = Tokenizer::from_json(tokenizer_json, c["config"], name);
      EXPECT_EQ(tok.encode(c["text"].get<std::string>(), true), c["ids"].get<std::vector<int32_t>>())
          << name << " " << c["config"].dump() << " " << c["text"].dump();
      ++checked;
    }
  }
  EXPECT_EQ(checked, 54u);
}

TEST(TokenizerConfig, StoriesSpecialTokens) {
  Tokenizer tok = stories();
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  EXPECT_EQ(tok.vocab_size(), 512);
  EXPECT_EQ(tok.config().unk_token, "<unk>");
  EXPECT_EQ(tok.piece(1), "<s>");
  EXPECT_EQ(tok.token_to_id("▁the"), tok.encode(" the", false).back());
  EXPECT_FALSE(tok.token_to_id("no such token").has_value());
  // tokenizer.json decides (transformers 5 ignores add_*_token next to a tokenizer.json).
  EXPECT_FALSE(tok.config().add_bos_token.has_value());
  EXPECT_EQ(tok.encode("Hello", true).front(), 1);
}

TEST(TokenizerConfig, ChatTemplateAndObjectTokens) {
  Tokenizer llama3 = fixture("syn-llama3-config");
  EXPECT_EQ(llama3.config().chat_template, "{{ bos_token }}{{ messages }}");  // the "default" entry
  EXPECT_EQ(llama3.config().eos_token, "<|end_of_text|>");                    // {"content": ...}
  EXPECT_EQ(llama3.eos_id(), llama3.token_to_id("<|end_of_text|>"));
  Tokenizer qwen = fixture("syn-qwen2");
  EXPECT_FALSE(qwen.config().bos_token.has_value());
  EXPECT_FALSE(qwen.bos_id().has_value());
  EXPECT_NE(qwen.config().chat_template.find("<|im_start|>"), std::string::npos);
  // transformers 5 writes the template to chat_template.jinja.
  Tokenizer phi3 = fixture("phi-3");
  EXPECT_EQ(phi3.config().chat_template, lw::tok_test::read_file(fixtures() + "/phi-3/chat_template.jinja"));
  EXPECT_FALSE(phi3.config().chat_template.empty());
  EXPECT_EQ(phi3.eos_id(), 32000);
}

TEST(TokenizerConfig, NoConfigMeansNoSpecialIds) {
  Tokenizer tok = fixture("syn-gpt2");
  EXPECT_FALSE(tok.bos_id().has_value());
  EXPECT_TRUE(tok.config().chat_template.empty());
}

// ---- special tokens in text ----

TEST(TokenizerSpecial, ParseSpecialOnlyWhenAsked) {
  Tokenizer tok = stories();
  auto plain = tok.encode("<s>", false, false);
  EXPECT_GT(plain.size(), 1u);  // spelled out
  EXPECT_EQ(tok.encode("<s>", false, true), std::vector<int32_t>{1});
  // Non-special added tokens are always matched (phi-3's </s> is not special).
  Tokenizer phi3 = fixture("phi-3");
  auto ids = phi3.encode("a</s>b", false, false);
  EXPECT_NE(std::find(ids.begin(), ids.end(), 2), ids.end());
  auto endoftext = phi3.encode("a<|endoftext|>b", false, false);
  EXPECT_EQ(std::find(endoftext.begin(), endoftext.end(), 32000), endoftext.end());
  EXPECT_EQ(phi3.decode(phi3.encode("a<|endoftext|>b", false, true), true), "a b");
}

// ---- streaming ----

TEST(StreamingDecoder, EmojiOverByteFallbackTokens) {
  Tokenizer tok = stories();
  auto ids = tok.encode("a😀b", false);
  // stories260K has no emoji: 😀 is four byte tokens.
  std::vector<std::string> pieces;
  for (int32_t id : ids) pieces.push_back(tok.piece(id));
  ASSERT_NE(std::find(pieces.begin(), pieces.end(), "<0xF0>"), pieces.end());
  lw::StreamingDecoder stream(tok);
  std::vector<std::string> chunks;
  for (int32_t id : ids) chunks.push_back(stream.push(id));
  chunks.push_back(stream.finish());
  std::string all;
  for (auto& c : chunks) {
    EXPECT_TRUE(json::parse(json(c).dump(), nullptr, false).is_string());
    for (unsigned char ch : c) EXPECT_FALSE(ch == 0xEF) << "a replacement character was emitted";
    all += c;
  }
  EXPECT_EQ(all, "a😀b");
  EXPECT_EQ(all, tok.decode(ids, true));
  // The three bytes before the last one of 😀 gave nothing.
  auto f0 = std::find(pieces.begin(), pieces.end(), "<0xF0>") - pieces.begin();
  for (long k = f0; k < f0 + 3; ++k) EXPECT_EQ(chunks[static_cast<size_t>(k)], "");
  EXPECT_EQ(chunks[static_cast<size_t>(f0 + 3)], "😀");
}

TEST(StreamingDecoder, AdjacentByteCharactersAndIncompleteEnd) {
  Tokenizer tok = stories();
  auto ids = tok.encode("👍🏽 ok", false);
  lw::StreamingDecoder stream(tok);
  std::string all;
  for (int32_t id : ids) {
    std::string chunk = stream.push(id);
    EXPECT_EQ(chunk.find("\xEF\xBF\xBD"), std::string::npos);
    all += chunk;
  }
  all += stream.finish();
  EXPECT_EQ(all, tok.decode(ids, true));
  // A character cut off at the end comes out as decode() gives it, at finish().
  std::vector<int32_t> cut(ids.begin(), ids.begin() + 2);
  lw::StreamingDecoder partial(tok);
  std::string text;
  for (int32_t id : cut) text += partial.push(id);
  EXPECT_EQ(text, "");
  text += partial.finish();
  EXPECT_EQ(text, tok.decode(cut, true));
  EXPECT_NE(text.find("\xEF\xBF\xBD"), std::string::npos);
}

TEST(StreamingDecoder, ByteLevelSplitCharacters) {
  Tokenizer tok = fixture("gpt-2");
  auto ids = tok.encode("日本語 🦙 done", false);
  lw::StreamingDecoder stream(tok);
  std::string all;
  for (int32_t id : ids) {
    std::string chunk = stream.push(id);
    EXPECT_EQ(chunk.find("\xEF\xBF\xBD"), std::string::npos);
    all += chunk;
  }
  all += stream.finish();
  EXPECT_EQ(all, "日本語 🦙 done");
}

// ---- bad input ----

TEST(TokenizerErrors, MalformedJsonNamesTheFile) {
  TempDir dir;
  std::string path = dir.file("tokenizer.json", "{\"model\": {\"type\": \"BPE\", ");
  EXPECT_ERROR_MENTIONS(Tokenizer::from_directory(dir.path()), "tokenizer.json", "malformed JSON");
  TempDir config;
  std::filesystem::copy_file(source_path("models/stories260K/tokenizer.json"), config.path() + "/tokenizer.json");
  config.file("tokenizer_config.json", "{\"bos_token\": }");
  EXPECT_ERROR_MENTIONS(Tokenizer::from_directory(config.path()), "tokenizer_config.json", "malformed JSON");
  TempDir empty;
  EXPECT_ERROR_MENTIONS(Tokenizer::from_directory(empty.path()), "tokenizer.json", "cannot open");
}

json stories_json() { return load_json(source_path("models/stories260K/tokenizer.json")); }

TEST(TokenizerErrors, UnknownComponentTypesAreNamed) {
  json t = stories_json();
  t["normalizer"] = {{"type", "Precompiled"}, {"precompiled_charsmap", "AAAA"}};
  EXPECT_ERROR_MENTIONS(Tokenizer::from_json(t, nullptr, "dir/tokenizer.json"), "dir/tokenizer.json", "normalizer",
                        "Precompiled");
  t = stories_json();
  t["normalizer"] = {{"type", "Sequence"}, {"normalizers", {{{"type", "NFC"}}, {{"type", "Fancy"}}}}};
  EXPECT_ERROR_MENTIONS(Tokenizer::from_json(t, nullptr, "x.json"), "x.json", "Fancy");
  t = stories_json();
  t["pre_tokenizer"] = {{"type", "UnicodeScripts"}};
  EXPECT_ERROR_MENTIONS(Tokenizer::from_json(t, nullptr, "x.json"), "x.json", "pre_tokenizer", "UnicodeScripts");
  t = stories_json();
  t["decoder"] = {{"type", "WordPiece"}, {"prefix", "##"}};
  EXPECT_ERROR_MENTIONS(Tokenizer::from_json(t, nullptr, "x.json"), "x.json", "decoder", "WordPiece");
  t = stories_json();
  t["post_processor"] = {{"type", "Mystery"}};
  EXPECT_ERROR_MENTIONS(Tokenizer::from_json(t, nullptr, "x.json"), "x.json", "post_processor", "Mystery");
  t = stories_json();
  t["model"]["type"] = "Unigram";
  EXPECT_ERROR_MENTIONS(Tokenizer::from_json(t, nullptr, "x.json"), "x.json", "model type", "Unigram");
  t = stories_json();
  t["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}};
  EXPECT_ERROR_MENTIONS(Tokenizer::from_json(t, nullptr, "x.json"), "x.json", "Split", "(unclosed");
}

TEST(TokenizerErrors, BadModels) {
  json t = stories_json();
  t["model"]["dropout"] = 0.1;
  EXPECT_ERROR_MENTIONS(Tokenizer::from_json(t, nullptr, "x.json"), "x.json", "dropout");
  t = stories_json();
  t["model"]["merges"].push_back({"▁t", "zzz"});
  EXPECT_ERROR_MENTIONS(Tokenizer::from_json(t, nullptr, "x.json"), "x.json", "zzz", "not in the vocabulary");
  t = stories_json();
  t["model"]["merges"] = {"a b c"};
  EXPECT_ERROR_MENTIONS(Tokenizer::from_json(t, nullptr, "x.json"), "x.json", "a b c");
  t = stories_json();
  t["model"].erase("vocab");
  EXPECT_ERROR_MENTIONS(Tokenizer::from_json(t, nullptr, "x.json"), "x.json", "vocab");
  EXPECT_ERROR_MENTIONS(Tokenizer::from_json(json::array(), nullptr, "x.json"), "x.json");
  // An unk token missing from the vocabulary fails when it is needed, naming the file.
  t = stories_json();
  t["model"]["byte_fallback"] = false;
  t["model"]["unk_token"] = "<nope>";
  Tokenizer tok = Tokenizer::from_json(t, nullptr, "x.json");
  EXPECT_ERROR_MENTIONS(tok.encode("日本", false), "x.json", "<nope>");
}

TEST(TokenizerErrors, InvalidUtf8AndUnknownIds) {
  Tokenizer tok = stories();
  for (std::string bad : {std::string("abc\xff"), std::string("\xc3"), std::string("\xed\xa0\x80"),
                          std::string("\xc0\xaf"), std::string("\xf4\x90\x80\x80")})
    EXPECT_ERROR_MENTIONS(tok.encode(bad, true), "UTF-8");
  EXPECT_ERROR_MENTIONS(tok.decode({1, 512}), "512", "vocabulary");
  EXPECT_ERROR_MENTIONS(tok.decode({-1}), "-1");
  EXPECT_ERROR_MENTIONS(tok.piece(100000), "100000");
  lw::StreamingDecoder stream(tok);
  EXPECT_ERROR_MENTIONS(stream.push(99999), "99999");
  EXPECT_EQ(stream.push(tok.encode("x", false).back()), "x");  // the bad id was not kept
}

// ---- added-token ids (checked against tokenizers 0.23.3) ----

json added_token(const std::string& content, json id) {
  return {{"id", std::move(id)}, {"content", content}, {"single_word", false}, {"lstrip", false},
          {"rstrip", false},     {"normalized", false}, {"special", true}};
}

Tokenizer stories_with(std::initializer_list<json> extra) {
  json t = stories_json();
  for (const json& token : extra) t["added_tokens"].push_back(token);
  return Tokenizer::from_json(t, nullptr, "dir/tokenizer.json");
}

TEST(TokenizerAddedIds, NumberedAfterTheModelVocabularyWhateverTheFileSays) {
  // The Rust library ignores the file's id (it only warns): a token not in the model vocabulary
  // gets the next id after it (512 here), gaps and repeats in the file's ids included.
  for (int64_t file_id : {int64_t{100000}, int64_t{600}, int64_t{512}, int64_t{5}, int64_t{4294967295}}) {
    Tokenizer tok = stories_with({added_token("<zz>", file_id)});
    EXPECT_EQ(tok.encode("<zz> a", true, true), (std::vector<int32_t>{1, 512, 410, 261})) << file_id;
    EXPECT_EQ(tok.token_to_id("<zz>"), 512) << file_id;
    EXPECT_EQ(tok.decode({512, 261}), "<zz> a") << file_id;
    EXPECT_EQ(tok.vocab_size(), 513) << file_id;
    EXPECT_ERROR_MENTIONS(tok.decode({100000}), "100000");
  }
  Tokenizer two = stories_with({added_token("<zz>", 600), added_token("<yy>", 600)});
  EXPECT_EQ(two.token_to_id("<zz>"), 512);
  EXPECT_EQ(two.token_to_id("<yy>"), 513);
  Tokenizer again = stories_with({added_token("<zz>", 100000), added_token("<zz>", 7)});
  EXPECT_EQ(again.token_to_id("<zz>"), 512);
  EXPECT_EQ(again.vocab_size(), 513);
}

TEST(TokenizerAddedIds, CountFromTheNumberOfVocabEntries) {
  // As BPE::get_vocab_size: entries, so a vocab with a repeated id puts the added token at 513.
  json t = stories_json();
  t["model"]["vocab"]["zzdup"] = 5;
  t["added_tokens"].push_back(added_token("<zz>", 512));
  Tokenizer tok = Tokenizer::from_json(t, nullptr, "x.json");
  EXPECT_EQ(tok.token_to_id("<zz>"), 513);
  // And a vocab id far past the others costs no memory and numbers nothing.
  t = stories_json();
  t["model"]["vocab"]["far"] = 200000000;
  t["added_tokens"].push_back(added_token("<zz>", 512));
  tok = Tokenizer::from_json(t, nullptr, "x.json");
  EXPECT_EQ(tok.token_to_id("<zz>"), 513);
  EXPECT_EQ(tok.piece(200000000), "far");
}

TEST(TokenizerAddedIds, IdsThatAreNotU32AreRefused) {
  // The Rust library refuses these while deserializing ("expected u32", "missing field `id`").
  for (const json& bad : {json(-1), json(600.0), json("7"), json(nullptr), json(4294967296)}) {
    const std::string written = bad.dump();  // outlives the macro's list of needles
    EXPECT_ERROR_MENTIONS(stories_with({added_token("<zz>", bad)}), "dir/tokenizer.json", "\"<zz>\"", written.c_str(),
                          "0 to 4294967295");
  }
  json no_id = added_token("<zz>", 0);
  no_id.erase("id");
  EXPECT_ERROR_MENTIONS(stories_with({no_id}), "dir/tokenizer.json", "\"<zz>\"", "no \"id\"");
  json t = stories_json();
  t["post_processor"] = {{"type", "TemplateProcessing"},
                         {"single", "<s> $A"},
                         {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {-1}}, {"tokens", {"<s>"}}}}}}};
  EXPECT_ERROR_MENTIONS(Tokenizer::from_json(t, nullptr, "x.json"), "x.json", "TemplateProcessing", "<s>", "-1");
  t["post_processor"] = {{"type", "RobertaProcessing"}, {"sep", {"</s>", "2"}}, {"cls", {"<s>", 0}}};
  EXPECT_ERROR_MENTIONS(Tokenizer::from_json(t, nullptr, "x.json"), "x.json", "RobertaProcessing", "sep", "\"2\"");
}

TEST(TokenizerAddedIds, CheckFitsModelNamesTheFileTheTokenAndBothIds) {
  Tokenizer tok = stories_with({added_token("<zz>", 100000)});
  EXPECT_ERROR_MENTIONS(tok.check_fits_model(512), "dir/tokenizer.json", "added token \"<zz>\" (id 512; the file says 100000",
                        "outside the model's vocabulary of 512 tokens (ids 0..511)");
  EXPECT_NO_THROW(tok.check_fits_model(513));
  EXPECT_NO_THROW(stories().check_fits_model(512));
  EXPECT_ERROR_MENTIONS(stories().check_fits_model(511), "tokenizer.json", "vocab token \"\xe2\x80\x8a\" (id 511)",
                        "vocabulary of 511 tokens");
  // An added token whose file id is its id is named without the note.
  std::string message = error_of([] { stories_with({added_token("<zz>", 512)}).check_fits_model(300); });
  EXPECT_NE(message.find("added token \"<zz>\" (id 512) is outside"), std::string::npos) << message;
}

// ---- regex dialect and concurrency ----

TEST(TokenizerRegex, OnigurumaClassesInPcre2) {
  auto matches = [](const std::string& pattern, const std::string& text) {
    std::vector<lw::tok::Match> out;
    lw::tok::Regex(pattern).find_all(text, out);
    std::vector<std::string> parts;
    for (auto& m : out) parts.push_back(text.substr(m.start, m.end - m.start));
    return parts;
  };
  // \s is White_Space: NEL yes, U+180E and U+200B no.
  EXPECT_EQ(matches("\\s+", "a\xc2\x85" "b\xe1\xa0\x8e" "c\xe2\x80\x8b" "d\xe3\x80\x80"),
            (std::vector<std::string>{"\xc2\x85", "\xe3\x80\x80"}));
  // \w includes marks; [^\s\p{L}\p{N}] inside a class.
  EXPECT_EQ(matches("\\w+", "e\xcc\x81t\xc3\xa9_1 x"), (std::vector<std::string>{"e\xcc\x81t\xc3\xa9_1", "x"}));
  EXPECT_EQ(matches(" ?[^\\s\\p{L}\\p{N}]+", "a ,b !!c"), (std::vector<std::string>{" ,", " !!"}));
  EXPECT_EQ(matches("(?i:'s|'t)", "IT'S it's 'T"), (std::vector<std::string>{"'S", "'s", "'T"}));
  EXPECT_EQ(matches("\\s+(?!\\S)|\\s+", "a   b  "), (std::vector<std::string>{"  ", " ", "  "}));
  EXPECT_EQ(matches("[]a]+", "]a]b"), (std::vector<std::string>{"]a]"}));
  EXPECT_EQ(matches("x*", "ab"), (std::vector<std::string>{"", "", ""}));
  EXPECT_EQ(lw::tok::Regex::translate("[^\\s\\w]\\S\\h"),
            "[^\\t-\\r\\x{85}\\p{Z}\\p{L}\\p{M}\\p{N}\\p{Pc}][^\\t-\\r\\x{85}\\p{Z}][0-9a-fA-F]");
}

TEST(TokenizerThreads, ConcurrentEncodesAgree) {
  Tokenizer tok = fixture("gpt-2");
  std::string text;
  for (int i = 0; i < 200; ++i) text += "The word number " + std::to_string(i) + " is wordy, 日本語 too. ";
  auto expected = tok.encode(text, false);
  std::vector<std::vector<int32_t>> results(4);
  std::vector<std::thread> threads;
  for (auto& r : results) threads.emplace_back([&] { r = tok.encode(text, false); });
  for (auto& t : threads) t.join();
  for (auto& r : results) EXPECT_EQ(r, expected);
}

TEST(TokenizerBpe, LongWordsAndRepeats) {
  // One 100 kB "word" goes through the merge queue (no quadratic rescans) and round-trips.
  Tokenizer tok = fixture("gpt-2");
  std::string word;
  for (int i = 0; i < 20000; ++i) word += "abcde";
  auto ids = tok.encode(word, false);
  EXPECT_LT(ids.size(), word.size() / 2);
  EXPECT_EQ(tok.decode(ids), word);
  EXPECT_EQ(tok.encode(word, false), ids);  // a second time (longer than the cache takes)
}

}  // namespace
