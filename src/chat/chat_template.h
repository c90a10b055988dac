// Chat templates: render a Hugging Face chat template (tokenizer_config.json's "chat_template", a
// Jinja2 template) byte for byte as transformers' apply_chat_template(..., tokenize=False) does.
//
//   nlohmann::ordered_json context = {
//       {"messages", {{{"role", "user"}, {"content", "Hello"}}}},
//       {"add_generation_prompt", true}, {"bos_token", "<s>"}, {"eos_token", "</s>"}};
//   std::string prompt = lw::chat::render_chat_template(template_source, context);
//
// The context is ordered_json because Python dicts keep insertion order, which tojson and
// dict.items() expose. Errors (syntax, unsupported constructs, Jinja runtime errors) throw
// lw::Error naming the line and the problem; a template's own raise_exception(...) throws
// lw::chat::TemplateException whose what() is exactly the template's message.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/error.h"

namespace lw::chat {

class TemplateException : public lw::Error {
 public:
  explicit TemplateException(const std::string& message) : lw::Error(message) {}
};

// Renders like transformers' render_jinja_template after apply_chat_template's normalisation:
// keys whose value is null are dropped from each message, "reasoning_content" is filled from
// "thinking"/"reasoning" (and "thinking" from it), and "tools", "documents" (null) and
// "add_generation_prompt" (false) are defined when the context lacks them. Every other key of the
// context (bos_token, eos_token, enable_thinking, date_string, ...) is passed through as is.
std::string render_chat_template(const std::string& source, const nlohmann::ordered_json& context);

// Renders with exactly the given variables, without that normalisation.
std::string render_jinja(const std::string& source, const nlohmann::ordered_json& variables);

// The strings generation should stop on after an assistant turn rendered with this template.
//
// Rule: render a probe conversation [user "U", assistant MARK, user "V"] (add_generation_prompt
// off) and take the text the template writes between MARK and the next user's content: that is
// how an assistant turn ends. The stop strings are the eos token, plus the earliest special token
// in that text (<|eot_id|>, <|im_end|>, <end_of_turn>, <|end|>, </s>, ...). Special tokens are
// those given; if none are given, anything shaped like a special token (<...> or <|...|> without
// spaces) counts. If the template cannot render the probe, only the eos token is returned.
std::vector<std::string> chat_stop_strings(const std::string& source, const std::string& bos_token,
                                           const std::string& eos_token,
                                           const std::vector<std::string>& special_tokens = {});

}  // namespace lw::chat
