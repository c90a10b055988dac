// Text through the CLI: prompts encoded and continuations decoded with the model's own
// tokenizer, checked against llama2.c's printed output for stories260K.
#include <gtest/gtest.h>

#include "helpers.h"

namespace lw {
namespace {

using test::layerwise;

const nlohmann::json& stories_reference() {
  static const nlohmann::json json = test::load_json(test::stories_path() + "/reference/greedy.json");
  return json;
}

TEST(CliText, GeneratePrintsWhatLlama2cPrinted) {
  for (const auto& entry : stories_reference()) {
    const std::string prompt = entry["prompt"];
    const std::string printed = entry["llama2c_stdout"];
    const auto steps = entry["generated_ids"].size();
    auto result = layerwise({"generate", "--model", test::stories_path(), "--prompt", prompt, "--max-new-tokens",
                             std::to_string(steps), "--temperature", "0", "--ignore-eos", "--quiet"});
    ASSERT_EQ(result.exit_code, 0) << result.err;
    ASSERT_EQ(printed.substr(0, prompt.size()), prompt);
    EXPECT_EQ(result.out, printed.substr(prompt.size()) + "\n") << "prompt \"" << prompt << "\"";
  }
}

TEST(CliText, TokenizeAndDetokenizeMatchTheReference) {
  const auto& entry = stories_reference()[1];
  auto ids = layerwise({"tokenize", "--model", test::stories_path(), entry["prompt"].get<std::string>()});
  ASSERT_EQ(ids.exit_code, 0) << ids.err;
  EXPECT_EQ(test::parse_ids(ids.out), entry["prompt_ids"].get<std::vector<int>>());
  auto pieces = layerwise({"tokenize", "--model", test::stories_path(), "--pieces", "There was"});
  ASSERT_EQ(pieces.exit_code, 0) << pieces.err;
  EXPECT_EQ(pieces.out, "1\t<s>\n291\t▁The\n276\tre\n286\t▁was\n");
  std::string joined;
  for (int id : entry["prompt_ids"]) joined += std::to_string(id) + " ";
  auto text = layerwise({"detokenize", "--model", test::stories_path(), "--skip-special", joined});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_EQ(text.out, entry["prompt"].get<std::string>() + "\n");
}

TEST(CliText, TokenizesWithAGgufVocabulary) {
  // llama.cpp's test vectors: strings separated by "\n__ggml_vocab_test__\n", one line of ids each.
  const std::string base = test::source_path("../shared/vocab/ggml-vocab-gpt-2.gguf");
  const std::string inputs = test::read_file(base + ".inp"), outputs = test::read_file(base + ".out");
  const std::string separator = "\n__ggml_vocab_test__\n";
  std::istringstream lines(outputs);
  std::string expected;
  size_t start = 0;
  for (int i = 0; i < 12; i++) {
    const size_t end = inputs.find(separator, start);
    ASSERT_NE(end, std::string::npos);
    ASSERT_TRUE(std::getline(lines, expected));
    const std::string text = inputs.substr(start, end - start);
    start = end + separator.size();
    if (text.empty()) continue;  // an empty argument is not a text
    auto result = layerwise({"tokenize", "--model", base, "--no-special-tokens", text});
    ASSERT_EQ(result.exit_code, 0) << result.err;
    EXPECT_EQ(test::parse_ids(result.out), test::parse_ids(expected)) << "'" << text << "'";
  }
}

TEST(CliText, PromptsFileRunsTextPromptsTogether) {
  test::TempDir dir;
  std::string lines;
  for (int i = 1; i <= 3; i++) lines += stories_reference()[static_cast<size_t>(i)]["prompt"].get<std::string>() + "\n";
  test::write_file(dir / "prompts.txt", lines);
  auto result = layerwise({"generate", "--model", test::stories_path(), "--prompts-file", dir / "prompts.txt",
                           "--max-new-tokens", "30", "--ignore-eos"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  std::istringstream out(result.out);
  std::string line;
  for (int i = 1; i <= 3; i++) {
    ASSERT_TRUE(std::getline(out, line));
    auto json = nlohmann::json::parse(line);
    const auto& entry = stories_reference()[static_cast<size_t>(i)];
    const std::string printed = entry["llama2c_stdout"], prompt = entry["prompt"];
    EXPECT_EQ(json["prompt"], i - 1);
    // The first 30 tokens of llama2.c's continuation, as text.
    EXPECT_EQ(printed.substr(prompt.size()).rfind(json["text"].get<std::string>(), 0), 0u) << json["text"];
    EXPECT_GT(json["text"].get<std::string>().size(), 60u);
  }
  EXPECT_NE(result.err.find("sweeps    30 in "), std::string::npos) << "one prefill sweep, then one per step: " << result.err;
}

TEST(CliText, ChatUsesTheModelsTemplateAndStopsAtTheEndOfTurn) {
  // stories260K has no chat template; give a copy a minimal one whose end of turn is </s>.
  test::TempDir dir;
  test::copy_dir(test::stories_path(), dir / "model");
  auto config = test::load_json(dir / "model/tokenizer_config.json");
  config["chat_template"] =
      "{% for m in messages %}{{ bos_token }}{{ m['content'] }}{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}"
      "{% endfor %}";
  test::write_file(dir / "model/tokenizer_config.json", config.dump());
  auto reply = layerwise({"chat", "--model", dir / "model", "--message", "There was a big", "--max-new-tokens", "20", "--quiet"});
  ASSERT_EQ(reply.exit_code, 0) << reply.err;
  auto generate = layerwise({"generate", "--model", dir / "model", "--prompt", "There was a big", "--max-new-tokens", "20",
                             "--quiet"});
  EXPECT_EQ(reply.out, generate.out) << "the template renders '<s>There was a big', the same tokens as the plain prompt";
  auto no_template = layerwise({"chat", "--model", test::stories_path(), "--message", "hi"});
  EXPECT_NE(no_template.exit_code, 0);
  EXPECT_NE(no_template.err.find("has no chat template"), std::string::npos) << no_template.err;
}

TEST(CliText, BadTextInputIsRefused) {
  auto invalid = layerwise({"generate", "--model", test::stories_path(), "--prompt", "bad \xff\xfe bytes"});
  EXPECT_EQ(invalid.exit_code, 1);
  EXPECT_NE(invalid.err.find("UTF-8"), std::string::npos) << invalid.err;
  EXPECT_TRUE(invalid.out.empty());
  auto outside = layerwise({"detokenize", "--model", test::stories_path(), "1 99999"});
  EXPECT_EQ(outside.exit_code, 1);
  EXPECT_NE(outside.err.find("99999"), std::string::npos) << outside.err;
  test::TempDir dir;
  test::copy_dir(test::stories_path(), dir / "model");
  test::write_file(dir / "model/tokenizer.json", "{\"model\": ");
  auto malformed = layerwise({"tokenize", "--model", dir / "model", "hello"});
  EXPECT_EQ(malformed.exit_code, 1);
  EXPECT_NE(malformed.err.find("tokenizer.json"), std::string::npos) << malformed.err;
}

}  // namespace
}  // namespace lw
