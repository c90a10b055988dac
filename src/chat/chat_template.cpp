#include "chat/chat_template.h"

#include "chat/jinja.h"

namespace lw::chat {

using jinja::Json;

std::string render_jinja(const std::string& source, const Json& variables) {
  jinja::Body program;
  try {
    program = jinja::parse(jinja::lex(source));
  } catch (const TemplateException&) {
    throw;
  } catch (const lw::Error& e) {
    throw lw::Error(std::string("chat template: ") + e.what());
  }
  if (!variables.is_object() && !variables.is_null())
    throw lw::Error("chat template: the context must be a JSON object");
  try {
    return jinja::render(program, variables.is_null() ? Json::object() : variables);
  } catch (const TemplateException&) {
    throw;
  } catch (const lw::Error& e) {
    throw lw::Error(std::string("chat template: ") + e.what());
  }
}

std::string render_chat_template(const std::string& source, const Json& context) {
  if (!context.is_object()) throw lw::Error("chat template: the context must be a JSON object");
  Json vars = context;
  if (vars.contains("messages")) {
    Json& messages = vars["messages"];
    if (!messages.is_array()) throw lw::Error("chat template: 'messages' must be a list");
    for (Json& m : messages) {
      if (!m.is_object()) throw lw::Error("chat template: every message must be a JSON object");
      Json kept = Json::object();  // apply_chat_template drops keys whose value is None
      for (auto& [k, v] : m.items())
        if (!v.is_null()) kept[k] = v;
      // render_jinja_template's _alias_reasoning_fields
      for (const char* key : {"reasoning_content", "thinking", "reasoning"}) {
        if (!kept.contains(key)) continue;
        Json reasoning = kept[key];
        Json aliased = Json::object();  // {"thinking": r, **message, "reasoning_content": r}
        aliased["thinking"] = reasoning;
        for (auto& [k, v] : kept.items()) aliased[k] = v;
        aliased["reasoning_content"] = reasoning;
        kept = std::move(aliased);
        break;
      }
      m = std::move(kept);
    }
  }
  for (const char* key : {"tools", "documents"})
    if (!vars.contains(key)) vars[key] = nullptr;
  if (!vars.contains("add_generation_prompt")) vars["add_generation_prompt"] = false;
  return render_jinja(source, vars);
}

namespace {

// The first special token in text, and where it starts.
std::pair<size_t, std::string> first_special(const std::string& text, const std::vector<std::string>& specials) {
  std::pair<size_t, std::string> best{std::string::npos, ""};
  if (!specials.empty()) {
    for (const std::string& s : specials) {
      if (s.empty()) continue;
      size_t at = text.find(s);
      if (at < best.first || (at == best.first && at != std::string::npos && s.size() > best.second.size()))
        best = {at, s};
    }
    return best;
  }
  for (size_t at = text.find('<'); at != std::string::npos; at = text.find('<', at + 1)) {
    size_t end = at + 1;
    while (end < text.size() && text[end] != '>' && text[end] != '<' && text[end] != ' ' && text[end] != '\n' &&
           text[end] != '\t')
      ++end;
    if (end < text.size() && text[end] == '>' && end > at + 1) return {at, text.substr(at, end - at + 1)};
  }
  return best;
}

}  // namespace

std::vector<std::string> chat_stop_strings(const std::string& source, const std::string& bos_token,
                                           const std::string& eos_token,
                                           const std::vector<std::string>& special_tokens) {
  std::vector<std::string> out;
  if (!eos_token.empty()) out.push_back(eos_token);
  const std::string mark = "\x01MARK\x02", next = "\x01NEXT\x02";
  Json ctx = {{"messages", Json::array({{{"role", "user"}, {"content", "U"}},
                                         {{"role", "assistant"}, {"content", mark}},
                                         {{"role", "user"}, {"content", next}}})},
              {"add_generation_prompt", false},
              {"bos_token", bos_token},
              {"eos_token", eos_token}};
  std::string text;
  try {
    text = render_chat_template(source, ctx);
  } catch (const lw::Error&) {
    return out;
  }
  size_t a = text.find(mark);
  if (a == std::string::npos) return out;
  a += mark.size();
  size_t b = text.find(next, a);
  std::string between = text.substr(a, b == std::string::npos ? std::string::npos : b - a);
  auto [at, token] = first_special(between, special_tokens);
  if (at != std::string::npos && token != eos_token) out.push_back(token);
  return out;
}

}  // namespace lw::chat
