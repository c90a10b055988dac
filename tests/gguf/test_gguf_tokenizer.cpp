// GGUF vocabulary -> Hugging Face tokenizer.json: the converted structure (checked against
// transformers' conversion and the models' own tokenizer.json where they agree), refusals, and,
// when lw_tokenizer is built, every test vector of llama.cpp (../shared/vocab/*.inp / *.out,
// made with Hugging Face tokenizers: no BOS, special tokens not parsed) through lw::Tokenizer.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sstream>

#include "common/error.h"
#include "gguf/gguf.h"
#include "gguf/gguf_tokenizer.h"
#include "gguf_test_util.h"

#ifdef LW_HAVE_TOKENIZER
#include "tokenizer/tokenizer.h"
#endif

namespace lw {
namespace {

using gguf_test::Bytes;
using gguf_test::TempFile;
using json = nlohmann::json;

constexpr uint32_t T_U32 = 4, T_I32 = 5, T_F32 = 6, T_BOOL = 7, T_STRING = 8, T_ARRAY = 9;
const std::string kSpace = "\xE2\x96\x81";  // ▁

json converted(const std::string& name) { return gguf_tokenizer_json(GgufFile::open(gguf_test::vocab_path(name))); }
json converted_config(const std::string& name) {
  return gguf_tokenizer_config(GgufFile::open(gguf_test::vocab_path(name)));
}

const json* added_token(const json& tokenizer, int64_t id) {
  for (const auto& token : tokenizer["added_tokens"])
    if (token["id"] == id) return &token;
  return nullptr;
}

TEST(GgufTokenizer, LlamaSentencePiece) {
  json t = converted("llama-spm");
  EXPECT_EQ(t["version"], "1.0");
  EXPECT_EQ(t["normalizer"],
            json::parse(R"({"type":"Sequence","normalizers":[{"type":"Prepend","prepend":"▁"},)"
                        R"({"type":"Replace","pattern":{"String":" "},"content":"▁"}]})"));
  EXPECT_TRUE(t["pre_tokenizer"].is_null());
  EXPECT_EQ(t["decoder"], json::parse(R"({"type":"Sequence","decoders":[)"
                                      R"({"type":"Replace","pattern":{"String":"▁"},"content":" "},)"
                                      R"({"type":"ByteFallback"},{"type":"Fuse"},)"
                                      R"({"type":"Strip","content":" ","start":1,"stop":0}]})"));
  json& m = t["model"];
  EXPECT_EQ(m["type"], "BPE");
  EXPECT_EQ(m["unk_token"], "<unk>");
  EXPECT_EQ(m["byte_fallback"], true);
  EXPECT_EQ(m["fuse_unk"], true);
  EXPECT_EQ(m["vocab"].size(), 32000u);
  EXPECT_EQ(m["vocab"]["<0x0A>"], 13);
  EXPECT_EQ(m["vocab"][kSpace + kSpace], 259);
  // The merges transformers' generate_merges derives from the scores (same count and order).
  ASSERT_EQ(m["merges"].size(), 61249u);
  EXPECT_EQ(m["merges"][0], json({kSpace, "t"}));
  EXPECT_EQ(m["merges"][1], json({"e", "r"}));
  EXPECT_EQ(m["merges"][2], json({"i", "n"}));
  EXPECT_EQ(m["merges"][3], json({kSpace, "a"}));
  // <unk>, <s>, </s> are special added tokens; nothing else is added.
  ASSERT_EQ(t["added_tokens"].size(), 3u);
  EXPECT_EQ((*added_token(t, 1))["content"], "<s>");
  EXPECT_EQ((*added_token(t, 1))["special"], true);
  EXPECT_EQ((*added_token(t, 1))["normalized"], false);
  EXPECT_EQ(t["post_processor"]["single"][0], json::parse(R"({"SpecialToken":{"id":"<s>","type_id":0}})"));
  EXPECT_EQ(t["post_processor"]["special_tokens"]["<s>"]["ids"], json({1}));

  json c = converted_config("llama-spm");
  EXPECT_EQ(c["bos_token"], "<s>");
  EXPECT_EQ(c["eos_token"], "</s>");
  EXPECT_EQ(c["unk_token"], "<unk>");
  EXPECT_TRUE(c["pad_token"].is_null());
  EXPECT_EQ(c["add_bos_token"], true);
  EXPECT_EQ(c["add_eos_token"], false);
  EXPECT_FALSE(c.contains("chat_template"));
}

TEST(GgufTokenizer, Phi3AddedTokensAndChatTemplate) {
  json t = converted("phi-3");
  EXPECT_EQ((*added_token(t, 32007))["content"], "<|end|>");
  EXPECT_EQ((*added_token(t, 32007))["special"], true);   // CONTROL
  EXPECT_EQ((*added_token(t, 2))["special"], false);      // </s> is USER_DEFINED in this file
  EXPECT_EQ((*added_token(t, 32000))["special"], true);   // EOS
  EXPECT_EQ(added_token(t, 32011), nullptr);              // [PAD32011] is UNUSED
  json c = converted_config("phi-3");
  EXPECT_EQ(c["eos_token"], "<|endoftext|>");
  EXPECT_EQ(c["pad_token"], "<|endoftext|>");
  EXPECT_EQ(c["chat_template"].get<std::string>().size(), 269u);
}

TEST(GgufTokenizer, ByteLevelGpt2) {
  json t = converted("gpt-2");
  EXPECT_TRUE(t["normalizer"].is_null());
  EXPECT_EQ(t["pre_tokenizer"],
            json::parse(R"({"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":true})"));
  EXPECT_EQ(t["decoder"],
            json::parse(R"({"type":"ByteLevel","add_prefix_space":true,"trim_offsets":true,"use_regex":true})"));
  json& m = t["model"];
  EXPECT_EQ(m["vocab"].size(), 50257u);
  ASSERT_EQ(m["merges"].size(), 50000u);
  EXPECT_EQ(m["merges"][0], json({"\u0120", "t"}));
  EXPECT_EQ(m["byte_fallback"], false);
  EXPECT_TRUE(m["unk_token"].is_null());
  ASSERT_EQ(t["added_tokens"].size(), 1u);
  EXPECT_EQ(t["added_tokens"][0]["content"], "<|endoftext|>");
  EXPECT_EQ(t["post_processor"]["single"].size(), 1u);  // no BOS for GPT-2
  json c = converted_config("gpt-2");
  EXPECT_EQ(c["bos_token"], "<|endoftext|>");
  EXPECT_EQ(c["add_bos_token"], false);
}

TEST(GgufTokenizer, PreTokenizersByFamily) {
  EXPECT_EQ(converted("starcoder")["pre_tokenizer"]["pretokenizers"][0],
            json::parse(R"({"type":"Digits","individual_digits":true})"));
  EXPECT_EQ(converted("refact")["pre_tokenizer"]["pretokenizers"].size(), 2u);
  json falcon = converted("falcon")["pre_tokenizer"]["pretokenizers"];
  ASSERT_EQ(falcon.size(), 4u);
  EXPECT_EQ(falcon[0]["type"], "Punctuation");
  EXPECT_EQ(falcon[3]["pattern"]["Regex"], "[0-9][0-9][0-9]");
  EXPECT_EQ(converted("mpt")["pre_tokenizer"]["type"], "ByteLevel");
  EXPECT_EQ(converted("gpt-neox")["pre_tokenizer"]["type"], "ByteLevel");  // no tokenizer.ggml.pre
  json coder = converted("deepseek-coder")["pre_tokenizer"]["pretokenizers"];
  ASSERT_EQ(coder.size(), 6u);
  EXPECT_EQ(coder[1]["pattern"]["Regex"], "\\s?\\p{L}+");
  EXPECT_EQ(coder[5], json::parse(R"({"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":false})"));
  json llm = converted("deepseek-llm")["pre_tokenizer"]["pretokenizers"];
  ASSERT_EQ(llm.size(), 7u);
  // A range whose ends a Unicode normaliser would change (U+1F5F-U+1F7D) survives as written.
  EXPECT_NE(llm[1]["pattern"]["Regex"].get<std::string>().find("\u1F5F-\u1F7D"), std::string::npos);
}

TEST(GgufTokenizer, AddedTokensKeepTheirSpellingAndIds) {
  // MPT: runs of spaces are user-defined tokens, matched whole (HF's "  Hello" -> [50276, 12092]).
  json mpt = converted("mpt");
  EXPECT_EQ(mpt["model"]["vocab"].size(), 50432u);
  EXPECT_EQ(mpt["model"]["vocab"]["  "], 50276);
  EXPECT_EQ(mpt["model"]["vocab"]["\u0120\u0120"], 245);  // the byte-level "  " keeps its own id
  const json* spaces = added_token(mpt, 50276);
  ASSERT_NE(spaces, nullptr);
  EXPECT_EQ((*spaces)["content"], "  ");
  EXPECT_EQ((*spaces)["special"], false);
  // DeepSeek: BOS/EOS keep their ids and spelling (transformers respells them and adds new ids).
  json ds = converted("deepseek-llm");
  EXPECT_EQ(ds["model"]["vocab"]["<\uFF5Cbegin\u2581of\u2581sentence\uFF5C>"], 100000);
  EXPECT_EQ((*added_token(ds, 100000))["special"], true);
  EXPECT_EQ(ds["post_processor"]["special_tokens"]["<\uFF5Cbegin\u2581of\u2581sentence\uFF5C>"]["ids"], json({100000}));
  EXPECT_EQ(converted_config("deepseek-coder")["bos_token"], "<\uFF5Cbegin\u2581of\u2581sentence\uFF5C>");
  EXPECT_EQ(converted_config("deepseek-coder")["add_bos_token"], true);
}

TEST(GgufTokenizer, UnsupportedModelsAreRefusedByName) {
  const std::string path = gguf_test::vocab_path("bert-bge");
  try {
    converted("bert-bge");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path + ": tokenizer.ggml.model 'bert' is not supported"), std::string::npos)
        << e.what();
  }
}

// A tiny vocabulary file: tokens, optional scores and types, extra key/values appended by `extra`.
struct TinyVocab {
  std::string model = "llama";
  std::string architecture = "llama";
  std::string pre;
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<int32_t> types;
  std::vector<std::string> merges;
  int64_t bos = -1;
  std::optional<bool> add_bos;

  std::string bytes() const {
    Bytes b;
    uint64_t kvs = 3 + !pre.empty() + !scores.empty() + !types.empty() + !merges.empty() + (bos >= 0) + add_bos.has_value();
    b.header(3, 0, kvs);
    b.key("general.architecture", T_STRING).str(architecture);
    b.key("tokenizer.ggml.model", T_STRING).str(model);
    if (!pre.empty()) b.key("tokenizer.ggml.pre", T_STRING).str(pre);
    b.key("tokenizer.ggml.tokens", T_ARRAY).u32(T_STRING).u64(tokens.size());
    for (const auto& t : tokens) b.str(t);
    if (!scores.empty()) {
      b.key("tokenizer.ggml.scores", T_ARRAY).u32(T_F32).u64(scores.size());
      for (float s : scores) b.f32(s);
    }
    if (!types.empty()) {
      b.key("tokenizer.ggml.token_type", T_ARRAY).u32(T_I32).u64(types.size());
      for (int32_t t : types) b.i32(t);
    }
    if (!merges.empty()) {
      b.key("tokenizer.ggml.merges", T_ARRAY).u32(T_STRING).u64(merges.size());
      for (const auto& m : merges) b.str(m);
    }
    if (bos >= 0) b.key("tokenizer.ggml.bos_token_id", T_U32).u32(static_cast<uint32_t>(bos));
    if (add_bos) b.key("tokenizer.ggml.add_bos_token", T_BOOL).u8(*add_bos);
    return b.data;
  }
};

json convert_tiny(const TinyVocab& v) {
  TempFile file(v.bytes());
  return gguf_tokenizer_json(GgufFile::open(file.path()));
}

void expect_convert_error(const TinyVocab& v, const std::string& fragment) {
  TempFile file(v.bytes());
  try {
    gguf_tokenizer_json(GgufFile::open(file.path()));
    ADD_FAILURE() << "no error; expected " << fragment;
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_EQ(message.rfind(file.path() + ": ", 0), 0u) << message;
    EXPECT_NE(message.find(fragment), std::string::npos) << message;
  }
}

TEST(GgufTokenizer, MergesFromScoresAsTransformersBuildsThem) {
  // Expected lists computed with transformers.tokenization_utils_base.generate_merges (5.24).
  TinyVocab v;
  v.tokens = {"<unk>", "<s>", "</s>", kSpace, "a", "b", kSpace + "a", "ab", kSpace + "ab", "ba", "aba", "a"};
  v.scores = {0, 0, 0, -1, -2, -3, -4, -4, -5, -4, -6, -7};
  v.types = {2, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1};
  json t = convert_tiny(v);
  json want = json::array({{kSpace, "a"}, {"a", "b"}, {"b", "a"}, {kSpace + "a", "b"}, {kSpace, "ab"},
                                 {"ab", "a"}, {"a", "ba"}});
  EXPECT_EQ(t["model"]["merges"], want);
  EXPECT_EQ(t["model"]["vocab"]["a"], 11);  // a repeated token keeps its last id, as a dict does
  EXPECT_EQ(t["model"]["unk_token"], "<unk>");  // token 0 is marked UNKNOWN

  // A byte-level vocabulary without merges: ordered by the merged token's id.
  v.model = "gpt2";
  v.scores.clear();
  const std::string g = "\u0120";  // GPT-2's space
  v.tokens = {"<unk>", "<s>", "</s>", g, "a", "b", g + "a", "ab", g + "ab", "ba", "aba", "a"};
  json b = convert_tiny(v);
  json by_id = json::array({{g, "a"}, {"a", "b"}, {g, "ab"}, {g + "a", "b"}, {"b", "a"}, {"a", "ba"}, {"ab", "a"}});
  EXPECT_EQ(b["model"]["merges"], by_id);
}

TEST(GgufTokenizer, DerivingMergesIsBounded) {
  // "a", "aa", ..., 1500 x "a": every split of every token is a merge (over a million, most of
  // them long): refused instead of growing with the square of the file.
  TinyVocab v;
  for (size_t n = 1; n <= 1500; ++n) v.tokens.push_back(std::string(n, 'a'));
  expect_convert_error(v, "too long and too many to derive merges from");
  v.tokens.resize(100);  // 4950 merges: fine
  EXPECT_EQ(convert_tiny(v)["model"]["merges"].size(), 4950u);
}

TEST(GgufTokenizer, MergesFromTheFile) {
  TinyVocab v;
  v.model = "gpt2";
  v.pre = "gpt-2";
  v.tokens = {"a", "b", "ab", "\u0120", "\u0120ab"};
  v.merges = {"a b", "\u0120 ab"};
  EXPECT_EQ(convert_tiny(v)["model"]["merges"], json::array({{"a", "b"}, {"\u0120", "ab"}}));
  v.merges = {"ab"};
  expect_convert_error(v, "tokenizer.ggml.merges entry 0 is not two tokens separated by a space");
  v.merges = {"a b", "b a"};
  expect_convert_error(v, "tokenizer.ggml.merges entry 1 ('b a') joins pieces that are not all tokens");
  v.merges = {"a c"};
  expect_convert_error(v, "entry 0 ('a c')");
}

TEST(GgufTokenizer, ByteLevelRespelling) {
  TinyVocab v;
  v.model = "gpt2";
  v.tokens = {"a", " x", "  ", "<|end|>"};
  v.types = {1, 1, 4, 3};
  json t = convert_tiny(v);
  EXPECT_EQ(t["model"]["vocab"]["\u0120x"], 1);  // a normal token in raw text is respelled
  EXPECT_EQ(t["model"]["vocab"]["  "], 2);       // a user-defined one is kept and added
  EXPECT_EQ((*added_token(t, 2))["special"], false);
  EXPECT_EQ((*added_token(t, 3))["special"], true);
  EXPECT_EQ(t["model"]["ignore_merges"], false);
  v.pre = "llama-bpe";
  json l3 = convert_tiny(v);
  EXPECT_EQ(l3["model"]["ignore_merges"], true);
  EXPECT_EQ(l3["pre_tokenizer"]["pretokenizers"][0]["type"], "Split");
}

TEST(GgufTokenizer, GemmaSpacesAndNoPrefix) {
  TinyVocab v;
  v.architecture = "gemma2";
  v.tokens = {"<pad>", "<eos>", "<bos>", "<unk>", "  ", kSpace, "a", "\t\t"};
  v.scores = {0, 0, 0, 0, 0, 0, 0, 0};
  v.types = {3, 3, 3, 2, 4, 1, 1, 4};
  json t = convert_tiny(v);
  EXPECT_EQ(t["model"]["vocab"][kSpace + kSpace], 4);  // stored as two spaces
  EXPECT_EQ(t["model"]["vocab"]["\t\t"], 7);            // no space in it: kept
  EXPECT_EQ(t["normalizer"], json::parse(R"({"type":"Replace","pattern":{"String":" "},"content":"▁"})"));
  EXPECT_EQ(t["decoder"]["decoders"].size(), 3u);  // no Strip
  EXPECT_EQ(t["model"]["merges"], json::array({{kSpace, kSpace}}));
}

TEST(GgufTokenizer, FlagsAndSpecialIds) {
  TinyVocab v;
  v.tokens = {"<unk>", "<s>", "x"};
  v.bos = 1;
  v.add_bos = false;
  TempFile file(v.bytes());
  const GgufFile f = GgufFile::open(file.path());
  json c = gguf_tokenizer_config(f);
  EXPECT_EQ(c["bos_token"], "<s>");
  EXPECT_EQ(c["add_bos_token"], false);
  json t = gguf_tokenizer_json(f);
  EXPECT_EQ(t["post_processor"]["single"].size(), 1u);
  // Without token types, the named tokens (BOS; <unk> is not named here) are special added tokens.
  ASSERT_EQ(t["added_tokens"].size(), 1u);
  EXPECT_EQ(t["added_tokens"][0]["content"], "<s>");
  // With types, a named token typed NORMAL stays an ordinary token (<unk>, typed UNKNOWN, is
  // now the unknown token and special).
  v.types = {2, 1, 1};
  json typed = convert_tiny(v);
  ASSERT_EQ(typed["added_tokens"].size(), 1u);
  EXPECT_EQ(typed["added_tokens"][0]["content"], "<unk>");
  v.types.clear();
  v.bos = 7;
  expect_convert_error(v, "tokenizer.ggml.bos_token_id is 7, outside the vocabulary of 3 tokens");
  v.bos = -1;
  v.types = {1, 1};
  expect_convert_error(v, "tokenizer.ggml.token_type has 2 entries for 3 tokens");
  v.types.clear();
  v.model = "gpt2";
  v.pre = "no-such-pre";
  expect_convert_error(v, "tokenizer.ggml.pre 'no-such-pre' is not a pre-tokenizer this converter knows");
  v.model = "t5";
  expect_convert_error(v, "tokenizer.ggml.model 't5' is not supported");
}

// ---------------------------------------------------------------- llama.cpp's test vectors

struct Vectors {
  std::vector<std::string> texts;
  std::vector<std::vector<int32_t>> ids;
};

Vectors read_vectors(const std::string& name) {
  const std::string base = gguf_test::vocab_path(name);
  Vectors v;
  const std::string inp = gguf_test::read_file(base + ".inp");
  const std::string separator = "\n__ggml_vocab_test__\n";
  size_t start = 0;
  for (size_t at; (at = inp.find(separator, start)) != std::string::npos; start = at + separator.size())
    v.texts.push_back(inp.substr(start, at - start));
  std::istringstream out(gguf_test::read_file(base + ".out"));
  std::string line;
  while (v.ids.size() < v.texts.size() && std::getline(out, line)) {
    std::istringstream numbers(line);
    std::vector<int32_t> ids;
    for (int32_t id; numbers >> id;) ids.push_back(id);
    v.ids.push_back(std::move(ids));
  }
  return v;
}

const char* const kVectorVocabs[] = {"llama-spm", "phi-3",  "gpt-2",        "starcoder",     "refact",
                                     "mpt",       "falcon", "deepseek-llm", "deepseek-coder"};

TEST(GgufVectorFiles, AreComplete) {
  for (const char* name : kVectorVocabs) {
    const Vectors v = read_vectors(name);
    EXPECT_EQ(v.texts.size(), 46u) << name;
    EXPECT_EQ(v.ids.size(), v.texts.size()) << name;
  }
}

#ifdef LW_HAVE_TOKENIZER

class GgufTokenizerVectors : public ::testing::TestWithParam<const char*> {};

TEST_P(GgufTokenizerVectors, EncodeAsHuggingFaceTokenizers) {
  const std::string path = gguf_test::vocab_path(GetParam());
  const GgufFile file = GgufFile::open(path);
  const Tokenizer tokenizer = Tokenizer::from_json(gguf_tokenizer_json(file), gguf_tokenizer_config(file), path);
  const Vectors v = read_vectors(GetParam());
  ASSERT_FALSE(v.texts.empty());
  for (size_t i = 0; i < v.texts.size(); ++i)
    EXPECT_EQ(tokenizer.encode(v.texts[i], /*add_special_tokens=*/false), v.ids[i]) << "text: \"" << v.texts[i] << "\"";
}

INSTANTIATE_TEST_SUITE_P(Shared, GgufTokenizerVectors, ::testing::ValuesIn(kVectorVocabs),
                         [](const ::testing::TestParamInfo<const char*>& param_info) {
                           std::string name = param_info.param;
                           for (char& c : name)
                             if (c == '-') c = '_';
                           return name;
                         });

TEST(GgufTokenizerWithLwTokenizer, BosAndDecode) {
  const std::string path = gguf_test::vocab_path("llama-spm");
  const GgufFile file = GgufFile::open(path);
  const Tokenizer tokenizer = Tokenizer::from_json(gguf_tokenizer_json(file), gguf_tokenizer_config(file), path);
  const auto ids = tokenizer.encode("Hello world", /*add_special_tokens=*/true);
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids[0], 1);
  EXPECT_EQ(tokenizer.bos_id(), 1);
  EXPECT_EQ(tokenizer.eos_id(), 2);
  EXPECT_EQ(tokenizer.decode(ids, /*skip_special_tokens=*/true), "Hello world");
  EXPECT_EQ(tokenizer.vocab_size(), 32000);
}

#else

TEST(GgufVectorFiles, NeedLwTokenizerToRun) { GTEST_SKIP() << "lw_tokenizer is not built: vectors not run in C++"; }

#endif

}  // namespace
}  // namespace lw
