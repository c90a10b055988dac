// Every case of tests/fixtures/chat_templates/goldens.json (written by scripts/make_chat_goldens.py
// with transformers' own renderer) renders byte for byte, or fails as transformers did: a
// template's raise_exception as TemplateException with the same message, other Jinja errors as
// lw::Error.
#include <gtest/gtest.h>

#include <cctype>
#include <fstream>
#include <map>
#include <sstream>

#include "chat/chat_template.h"

namespace {

using Json = nlohmann::ordered_json;
const std::string kDir = std::string(LW_SOURCE_DIR) + "/tests/fixtures/chat_templates/";

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot open " + path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

const Json& goldens() {
  static const Json g = Json::parse(read_file(kDir + "goldens.json"));
  return g;
}

// Shows where two strings first differ.
std::string first_difference(const std::string& want, const std::string& got) {
  size_t i = 0;
  while (i < want.size() && i < got.size() && want[i] == got[i]) ++i;
  auto around = [&](const std::string& s) { return Json(s.substr(i < 40 ? 0 : i - 40, 80)).dump(); };
  return "first difference at byte " + std::to_string(i) + "\n  want: " + around(want) + "\n  got:  " + around(got);
}

class Golden : public ::testing::TestWithParam<size_t> {};

TEST_P(Golden, RendersLikeTransformers) {
  const Json& c = goldens()["cases"][GetParam()];
  const std::string source = read_file(kDir + c["template"].get<std::string>());
  const Json& context = c["context"];
  if (c.contains("output")) {
    std::string want = c["output"].get<std::string>(), got;
    ASSERT_NO_THROW(got = lw::chat::render_chat_template(source, context));
    EXPECT_EQ(got, want) << first_difference(want, got);
    return;
  }
  const Json& err = c["error"];
  if (err["type"] == "TemplateError") {  // the template's own raise_exception
    try {
      lw::chat::render_chat_template(source, context);
      FAIL() << "expected raise_exception(\"" << err["message"].get<std::string>() << "\")";
    } catch (const lw::chat::TemplateException& e) {
      EXPECT_EQ(std::string(e.what()), err["message"].get<std::string>());
    }
  } else {  // a Jinja runtime error (e.g. UndefinedError): any lw::Error, never an output
    EXPECT_THROW(lw::chat::render_chat_template(source, context), lw::Error) << err.dump();
  }
}

std::string case_name(const ::testing::TestParamInfo<size_t>& info) {
  const Json& c = goldens()["cases"][info.param];
  std::string name = c["family"].get<std::string>() + "_" + c["name"].get<std::string>();
  for (char& ch : name)
    if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
  return name + "_" + std::to_string(info.param);
}

std::vector<size_t> all_cases() {
  std::vector<size_t> v(goldens()["cases"].size());
  for (size_t i = 0; i < v.size(); ++i) v[i] = i;
  return v;
}

INSTANTIATE_TEST_SUITE_P(ChatTemplates, Golden, ::testing::ValuesIn(all_cases()), case_name);

TEST(Goldens, CoverEveryTemplateAndFamily) {
  std::map<std::string, int> per_template;
  for (const Json& c : goldens()["cases"]) per_template[c["template"].get<std::string>()]++;
  for (const char* t : {"llama2", "llama3", "llama3.1", "mistral-v0.1", "mistral-v0.3", "qwen2", "qwen2.5", "qwen3",
                        "smollm2", "gemma2", "gemma3", "phi3", "phi3.5"})
    EXPECT_GE(per_template[std::string(t) + ".jinja"], 10) << t;
}

// The end-of-turn strings each family stops on.
TEST(StopStrings, RealTemplates) {
  struct Want {
    const char* family;
    const char* bos;
    const char* eos;
    std::vector<std::string> stops;
  };
  const std::vector<Want> wants = {
      {"llama2", "<s>", "</s>", {"</s>"}},
      {"llama3", "<|begin_of_text|>", "<|end_of_text|>", {"<|end_of_text|>", "<|eot_id|>"}},
      {"llama3.1", "<|begin_of_text|>", "<|eot_id|>", {"<|eot_id|>"}},
      {"mistral-v0.1", "<s>", "</s>", {"</s>"}},
      {"mistral-v0.3", "<s>", "</s>", {"</s>"}},
      {"qwen2", "", "<|endoftext|>", {"<|endoftext|>", "<|im_end|>"}},
      {"qwen2.5", "", "<|im_end|>", {"<|im_end|>"}},
      {"qwen3", "", "<|im_end|>", {"<|im_end|>"}},
      {"smollm2", "<|im_start|>", "<|im_end|>", {"<|im_end|>"}},
      {"gemma2", "<bos>", "<eos>", {"<eos>", "<end_of_turn>"}},
      {"gemma3", "<bos>", "<eos>", {"<eos>", "<end_of_turn>"}},
      {"phi3", "<s>", "<|endoftext|>", {"<|endoftext|>", "<|end|>"}},
      {"phi3.5", "<s>", "<|endoftext|>", {"<|endoftext|>", "<|end|>"}},
  };
  for (const Want& w : wants) {
    std::string source = read_file(kDir + w.family + ".jinja");
    EXPECT_EQ(lw::chat::chat_stop_strings(source, w.bos, w.eos), w.stops) << w.family;
  }
}

TEST(StopStrings, UsesTheGivenSpecialTokens) {
  std::string source = read_file(kDir + "llama3.jinja");
  // Only <|eot_id|> counts as special here; the header tokens come later anyway.
  EXPECT_EQ(lw::chat::chat_stop_strings(source, "<|begin_of_text|>", "<|end_of_text|>",
                                        {"<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|start_header_id|>"}),
            (std::vector<std::string>{"<|end_of_text|>", "<|eot_id|>"}));
  // A template that ends turns with plain text: just the eos token.
  EXPECT_EQ(lw::chat::chat_stop_strings("{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}", "", "</s>"),
            (std::vector<std::string>{"</s>"}));
  // A template that cannot render the probe: just the eos token.
  EXPECT_EQ(lw::chat::chat_stop_strings("{{ raise_exception('no') }}", "", "</s>"), (std::vector<std::string>{"</s>"}));
}

}  // namespace
