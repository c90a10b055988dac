// The reader on llama.cpp's vocabulary files (../shared/vocab/ggml-vocab-*.gguf). The expected
// values were read with the gguf Python package (gguf 0.19: GGUFReader(path).fields[...]).
#include <gtest/gtest.h>

#include <filesystem>

#include "common/error.h"
#include "gguf/gguf.h"
#include "gguf_test_util.h"

namespace lw {
namespace {

struct VocabFile {
  const char* name;
  const char* architecture;
  const char* model;
  const char* pre;  // "" when the file has no tokenizer.ggml.pre
  size_t keys;
  size_t tokens;
  int64_t merges;  // -1: no tokenizer.ggml.merges
  int64_t bos, eos;  // -1: no such key
  const char* token_1000;
  const char* last_token;
  int64_t type_1000;
  uint64_t data_offset;
};

// Token strings with their non-ASCII characters escaped.
const VocabFile kFiles[] = {
    {"baichuan", "baichuan", "llama", "", 18, 64000, -1, 1, 2, "ress", "\uF1E9", 1, 1341024u},
    {"bert-bge", "bert", "bert", "bert-bge", 20, 30522, -1, -1, -1, "\u2581\"", "\uFF5E", 1, 627552u},
    {"deepseek-coder", "llama", "gpt2", "deepseek-coder", 25, 32256, 31757, 32013, 32014, "\u00E5\u0131\u00AF",
     "[PAD32255]", 1, 1156096u},
    {"deepseek-llm", "llama", "gpt2", "deepseek-llm", 23, 102400, 99757, 100000, 100001, "ty", "[PAD102399]", 1,
     3970176u},
    {"falcon", "falcon", "gpt2", "falcon", 18, 65024, 64784, 11, 11, "\u0120requ", "\u0120victoria", 1, 2287744u},
    {"gpt-2", "gpt2", "gpt2", "gpt-2", 16, 50257, 50000, 50256, 50256, "ale", "<|endoftext|>", 1, 1766816u},
    {"gpt-neox", "gptneox", "gpt2", "", 17, 50432, 50009, 0, 0, "err", "[PAD50431]", 1, 1771456u},
    {"llama-spm", "llama", "llama", "default", 22, 32000, -1, 1, 2, "ied", "\u7ED9", 1, 723872u},
    {"mpt", "mpt", "gpt2", "mpt", 17, 50432, 50009, 0, 0, "err", "[PAD50431]", 1, 1771424u},
    {"phi-3", "phi3", "llama", "default", 26, 32064, -1, 1, 32000, "ied", "[PAD32063]", 1, 726048u},
    {"refact", "refact", "gpt2", "refact", 18, 49216, 48891, 0, 0, "\u0109\u0109\u0109\u0109", "[PAD49215]", 1,
     1720736u},
    {"starcoder", "starcoder2", "gpt2", "starcoder", 19, 49152, 48872, 0, 0, "Comp", "sdb", 1, 1719360u},
};

TEST(GgufVocabFiles, EveryFileInSharedIsListed) {
  size_t found = 0;
  for (const auto& entry : std::filesystem::directory_iterator(gguf_test::shared_vocab_dir())) {
    if (entry.path().extension() != ".gguf") continue;
    ++found;
    bool listed = false;
    for (const VocabFile& v : kFiles) listed |= entry.path() == std::filesystem::path(gguf_test::vocab_path(v.name));
    EXPECT_TRUE(listed) << entry.path() << " has no expected values here";
  }
  EXPECT_EQ(found, std::size(kFiles));
}

class GgufVocabFile : public ::testing::TestWithParam<VocabFile> {};

TEST_P(GgufVocabFile, HeaderMatchesTheGgufPackage) {
  const VocabFile& v = GetParam();
  const std::string path = gguf_test::vocab_path(v.name);
  const GgufFile f = GgufFile::open(path);
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.file_bytes(), std::filesystem::file_size(path));
  EXPECT_EQ(f.header_bytes(), f.file_bytes());  // vocabulary only: nothing after the header
  EXPECT_EQ(f.alignment(), 32u);
  EXPECT_EQ(f.data_offset(), v.data_offset);
  EXPECT_TRUE(f.tensors().empty());
  EXPECT_EQ(f.metadata().size(), v.keys);
  EXPECT_EQ(f.keys().size(), v.keys);
  EXPECT_EQ(f.get_string("general.architecture"), v.architecture);
  EXPECT_EQ(f.get_string("tokenizer.ggml.model"), v.model);
  EXPECT_EQ(f.find_string("tokenizer.ggml.pre").value_or(""), v.pre);

  const auto& tokens = f.get_array_strings("tokenizer.ggml.tokens");
  ASSERT_EQ(tokens.size(), v.tokens);
  EXPECT_EQ(tokens[1000], v.token_1000);
  EXPECT_EQ(tokens.back(), v.last_token);
  const auto types = f.get_array_ints("tokenizer.ggml.token_type");
  ASSERT_EQ(types.size(), v.tokens);
  EXPECT_EQ(types[1000], v.type_1000);
  EXPECT_EQ(f.get_array("tokenizer.ggml.token_type").element_type, GgufType::INT32);
  if (v.merges >= 0)
    EXPECT_EQ(f.get_array_strings("tokenizer.ggml.merges").size(), static_cast<size_t>(v.merges));
  else
    EXPECT_FALSE(f.has("tokenizer.ggml.merges"));
  if (v.bos >= 0)
    EXPECT_EQ(f.get_uint("tokenizer.ggml.bos_token_id"), static_cast<uint64_t>(v.bos));
  else
    EXPECT_EQ(f.find_uint("tokenizer.ggml.bos_token_id"), std::nullopt);
  if (v.eos >= 0) {
    EXPECT_EQ(f.get_int("tokenizer.ggml.eos_token_id"), v.eos);
  }
}

INSTANTIATE_TEST_SUITE_P(Shared, GgufVocabFile, ::testing::ValuesIn(kFiles),
                         [](const ::testing::TestParamInfo<VocabFile>& param_info) {
                           std::string name = param_info.param.name;
                           for (char& c : name)
                             if (c == '-') c = '_';
                           return name;
                         });

TEST(GgufVocabFiles, LlamaSpmInDetail) {
  const GgufFile f = GgufFile::open(gguf_test::vocab_path("llama-spm"));
  const std::vector<std::string> keys = {
      "general.architecture", "general.name", "llama.block_count", "llama.context_length",
      "llama.embedding_length", "llama.feed_forward_length", "llama.attention.head_count",
      "llama.attention.head_count_kv", "llama.attention.layer_norm_rms_epsilon", "general.file_type",
      "llama.vocab_size", "llama.rope.dimension_count", "tokenizer.ggml.model", "tokenizer.ggml.pre",
      "tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type", "tokenizer.ggml.bos_token_id",
      "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.add_bos_token",
      "tokenizer.ggml.add_eos_token"};
  EXPECT_EQ(f.keys(), keys);
  EXPECT_EQ(f.get_string("general.name"), "llama-spm");
  EXPECT_EQ(f.get_uint("llama.block_count"), 32u);
  EXPECT_EQ(f.get_uint("llama.vocab_size"), 32000u);
  EXPECT_EQ(f.find("llama.attention.layer_norm_rms_epsilon")->type, GgufType::FLOAT32);
  EXPECT_EQ(f.get_float("llama.attention.layer_norm_rms_epsilon"), static_cast<double>(1e-5f));
  const auto& tokens = f.get_array_strings("tokenizer.ggml.tokens");
  EXPECT_EQ(tokens[0], "<unk>");
  EXPECT_EQ(tokens[1], "<s>");
  EXPECT_EQ(tokens[2], "</s>");
  EXPECT_EQ(tokens[3], "<0x00>");
  EXPECT_EQ(tokens[13], "<0x0A>");
  EXPECT_EQ(tokens[259], "\u2581\u2581");
  const auto scores = f.get_array_floats("tokenizer.ggml.scores");
  EXPECT_EQ(scores[1000], -741.0);
  const auto types = f.get_array_ints("tokenizer.ggml.token_type");
  EXPECT_EQ(types[0], 2);   // UNKNOWN
  EXPECT_EQ(types[1], 3);   // CONTROL
  EXPECT_EQ(types[3], 6);   // BYTE
  EXPECT_EQ(f.get_uint("tokenizer.ggml.unknown_token_id"), 0u);
  EXPECT_TRUE(f.get_bool("tokenizer.ggml.add_bos_token"));
  EXPECT_FALSE(f.get_bool("tokenizer.ggml.add_eos_token"));
}

TEST(GgufVocabFiles, Phi3InDetail) {
  const GgufFile f = GgufFile::open(gguf_test::vocab_path("phi-3"));
  const std::string& chat_template = f.get_string("tokenizer.chat_template");
  EXPECT_EQ(chat_template.size(), 269u);
  EXPECT_EQ(chat_template.rfind("{{ bos_token }}{% for message in messages %}", 0), 0u);
  EXPECT_EQ(f.get_float("phi3.rope.freq_base"), 10000.0);
  EXPECT_EQ(f.get_uint("general.quantization_version"), 2u);
  const auto scores = f.get_array_floats("tokenizer.ggml.scores");
  EXPECT_EQ(scores[0], -1000.0);
  EXPECT_EQ(scores[3], 0.0);
  EXPECT_EQ(scores[31999], -31740.0);
  EXPECT_EQ(f.get_array_strings("tokenizer.ggml.tokens")[32007], "<|end|>");
  EXPECT_EQ(f.get_uint("tokenizer.ggml.padding_token_id"), 32000u);
}

TEST(GgufVocabFiles, GptFamilyMerges) {
  const GgufFile gpt2 = GgufFile::open(gguf_test::vocab_path("gpt-2"));
  const auto& merges = gpt2.get_array_strings("tokenizer.ggml.merges");
  EXPECT_EQ(merges[0], "\u0120 t");
  EXPECT_EQ(merges[1], "\u0120 a");
  EXPECT_EQ(merges[2], "h e");
  const GgufFile mpt = GgufFile::open(gguf_test::vocab_path("mpt"));
  EXPECT_EQ(mpt.get_array_strings("tokenizer.ggml.tokens")[50276], "  ");
  EXPECT_EQ(mpt.get_array_ints("tokenizer.ggml.token_type")[50276], 4);  // USER_DEFINED
}

}  // namespace
}  // namespace lw
