// The tokenizer against the model it runs with: every id the tokenizer can give needs a row in
// the model's embedding, checked where a command loads both (generate, chat, score, perplexity),
// while tokenize/detokenize, which run no model, print the tokenizer's own ids.
#include <gtest/gtest.h>

#include "helpers.h"

namespace lw {
namespace {

using test::layerwise;

// A copy of stories260K (512 tokens) whose tokenizer.json adds "<zz>" with the file id 100000:
// numbered 512 as Hugging Face tokenizers numbers it, one past the model's embedding.
class StoriesWithAddedToken : public ::testing::Test {
 protected:
  void SetUp() override {
    test::copy_dir(test::stories_path(), model_);
    nlohmann::json tokenizer = test::load_json(model_ + "/tokenizer.json");
    tokenizer["added_tokens"].push_back({{"id", 100000},
                                         {"content", "<zz>"},
                                         {"single_word", false},
                                         {"lstrip", false},
                                         {"rstrip", false},
                                         {"normalized", false},
                                         {"special", true}});
    test::write_file(model_ + "/tokenizer.json", tokenizer.dump());
  }
  // What a model run must say: the file, the token, its id and the file's id, the model's size.
  void expect_refused(const test::RunResult& result) const {
    EXPECT_EQ(result.exit_code, 1) << result.err;
    EXPECT_EQ(result.out, "");
    for (const std::string& part : std::vector<std::string>{model_ + "/tokenizer.json: added token \"<zz>\" (id 512; the file says 100000",
                                   "is outside the model's vocabulary of 512 tokens (ids 0..511)"})
      EXPECT_NE(result.err.find(part), std::string::npos) << "\"" << result.err << "\" lacks \"" << part << "\"";
  }
  test::TempDir dir_;
  const std::string model_ = dir_ / "model";
};

TEST_F(StoriesWithAddedToken, TokenizeAndDetokenizeUseTheTokenizersIds) {
  auto ids = layerwise({"tokenize", "--model", model_, "--ids", "--parse-special", "<zz> a"});
  ASSERT_EQ(ids.exit_code, 0) << ids.err;
  EXPECT_EQ(ids.out, "1 512 410 261\n");
  auto text = layerwise({"detokenize", "--model", model_, "1 512 410 261"});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_EQ(text.out, "<s><zz>  a\n");  // as tokenizers decodes it
}

TEST_F(StoriesWithAddedToken, ModelRunsNameTheTokenizerFileAndTheToken) {
  // Refused whether or not the prompt uses the token: the tokenizer does not fit the model.
  expect_refused(layerwise({"generate", "--model", model_, "--parse-special", "--prompt", "<zz> a",
                            "--max-new-tokens", "2", "--quiet"}));
  expect_refused(layerwise({"generate", "--model", model_, "--prompt", "a", "--max-new-tokens", "2", "--quiet"}));
  const std::string text = dir_ / "text.txt";
  test::write_file(text, "Once upon a time there was a cat.\n");
  expect_refused(layerwise({"perplexity", "--model", model_, "--text", text, "--quiet"}));
  const std::string rows = dir_ / "rows.jsonl";
  test::write_file(rows, "{\"prefix\": \"Once upon a\", \"choices\": [\" time\", \" cat\"]}\n");
  expect_refused(layerwise({"score", "--model", model_, "--input", rows, "--quiet"}));
  // The same model with its own tokenizer runs.
  auto plain = layerwise({"generate", "--model", test::stories_path(), "--prompt", "a", "--max-new-tokens", "2",
                          "--temperature", "0", "--quiet"});
  EXPECT_EQ(plain.exit_code, 0) << plain.err;
}

}  // namespace
}  // namespace lw
