// Text helpers shared by the commands.
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tokenizer/tokenizer.h"

namespace lw::cli {

// The tokenizer of a model directory (tokenizer.json, tokenizer_config.json) or a GGUF file.
Tokenizer load_tokenizer(const std::string& model_path);

struct ChatPrompt {
  std::string text;              // the rendered template
  std::vector<int32_t> ids;      // its tokens
  std::vector<int> stop_ids;     // the template's end-of-turn tokens
};
// Renders messages with the model's chat template (generation prompt added) and tokenizes it.
ChatPrompt render_chat(const Tokenizer& tokenizer, const nlohmann::ordered_json& messages, const std::string& model);

}  // namespace lw::cli
