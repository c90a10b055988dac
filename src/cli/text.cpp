// Text in and out: loading a model's tokenizer, `tokenize`, `detokenize`, and the prompt side of
// `generate --prompt/--chat` and `chat`.
#include "cli/text.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "chat/chat_template.h"
#include "checkpoint/checkpoint.h"
#include "cli/commands.h"
#include "common/error.h"
#include "common/file.h"
#include "common/system.h"
#include "gguf/gguf_tokenizer.h"

namespace lw::cli {

Tokenizer load_tokenizer(const std::string& model_path) {
  namespace fs = std::filesystem;
  Checkpoint::check_path(model_path);  // "not a model" before "no tokenizer.json"
  if (fs::is_directory(model_path)) {
    if (!fs::exists(fs::path(model_path) / "tokenizer.json"))
      fail(model_path, "has no tokenizer.json: give token ids with --prompt-ids instead");
    return Tokenizer::from_directory(model_path);
  }
  if (fs::is_regular_file(model_path)) {  // a GGUF file carries its vocabulary
    const GgufFile gguf = GgufFile::open(model_path);
    return Tokenizer::from_json(gguf_tokenizer_json(gguf), gguf_tokenizer_config(gguf), model_path);
  }
  fail(model_path, "no such model directory or GGUF file");
}

ChatPrompt render_chat(const Tokenizer& tokenizer, const nlohmann::ordered_json& messages, const std::string& model) {
  const TokenizerConfig& config = tokenizer.config();
  if (config.chat_template.empty())
    fail(model, "has no chat template (tokenizer_config.json \"chat_template\"); use --prompt without --chat");
  const std::string bos = config.bos_token.value_or(""), eos = config.eos_token.value_or("");
  nlohmann::ordered_json context = {{"messages", messages}, {"add_generation_prompt", true}, {"bos_token", bos},
                                    {"eos_token", eos}};
  ChatPrompt prompt;
  prompt.text = chat::render_chat_template(config.chat_template, context);
  // As apply_chat_template(tokenize=True): the template writes the special tokens itself.
  prompt.ids = tokenizer.encode(prompt.text, false, true);
  for (const std::string& stop : chat::chat_stop_strings(config.chat_template, bos, eos))
    if (auto id = tokenizer.token_to_id(stop)) prompt.stop_ids.push_back(*id);
  return prompt;
}

int run_tokenize(const TokenizeArgs& args) {
  const Tokenizer tokenizer = load_tokenizer(args.model);
  const std::string text = args.file.empty() ? args.text : read_file_text(args.file);
  const double start = now_seconds();
  const std::vector<int32_t> ids = tokenizer.encode(text, !args.no_special_tokens, args.parse_special);
  const double seconds = now_seconds() - start;
  if (args.pieces) {
    for (int32_t id : ids) std::printf("%d\t%s\n", id, tokenizer.piece(id).c_str());
  } else {
    for (size_t i = 0; i < ids.size(); i++) std::printf(i ? " %d" : "%d", ids[i]);
    std::printf("\n");
  }
  if (!args.file.empty())
    std::fprintf(stderr, "encoded %zu bytes into %zu tokens in %.3f s (%.0f tokens/s, %.1f MB/s)\n", text.size(), ids.size(),
                 seconds, seconds > 0 ? static_cast<double>(ids.size()) / seconds : 0.0,
                 seconds > 0 ? static_cast<double>(text.size()) / seconds / 1e6 : 0.0);
  return 0;
}

int run_detokenize(const std::string& model, const std::string& ids, bool skip_special) {
  const Tokenizer tokenizer = load_tokenizer(model);
  std::vector<int> parsed = parse_ids(ids, "ids");
  std::printf("%s\n", tokenizer.decode(std::vector<int32_t>(parsed.begin(), parsed.end()), skip_special).c_str());
  return 0;
}

}  // namespace lw::cli
