// `generate` and `chat`: prompts in (ids, text or a conversation), tokens or text out.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <optional>

#include "cli/commands.h"
#include "cli/text.h"
#include "common/error.h"
#include "common/sizes.h"
#include "common/system.h"
#include "runtime/engine.h"
#include "runtime/generate.h"

namespace lw::cli {
namespace {

// One prompt per line, numbered by line: output line N answers input line N, so a blank line
// is refused rather than skipped.
std::vector<std::vector<int>> read_lines(const std::string& path, const std::function<std::vector<int>(const std::string&, int)>& parse) {
  std::ifstream file(path);
  if (!file) fail(path, "cannot open");
  std::vector<std::vector<int>> prompts;
  std::string line;
  int number = 0;
  while (std::getline(file, line)) {
    number++;
    if (!line.empty() && line.back() == '\r') line.pop_back();  // CRLF files
    if (line.find_first_not_of(" \t") == std::string::npos)
      fail(path + ":" + std::to_string(number), "empty line: each line is one prompt (remove blank lines)");
    prompts.push_back(parse(line, number));
  }
  if (prompts.empty()) fail(path, "holds no prompts (one per line)");
  return prompts;
}

}  // namespace

namespace {

void print_run_stats(const Engine& engine, double load_seconds, double prefill_seconds, int prompt_tokens,
                     double decode_seconds, int decode_tokens, int sequences, bool profile) {
  std::fprintf(stderr, "load      %s\n", seconds_text(load_seconds).c_str());
  std::fprintf(stderr, "prefill   %d tokens in %s (%.1f tokens/s)\n", prompt_tokens, seconds_text(prefill_seconds).c_str(),
               prefill_seconds > 0 ? prompt_tokens / prefill_seconds : 0.0);
  std::fprintf(stderr, "decode    %d tokens in %s (%.2f tokens/s)\n", decode_tokens, seconds_text(decode_seconds).c_str(),
               decode_seconds > 0 ? decode_tokens / decode_seconds : 0.0);
  print_stream_report(engine, sequences, profile);
  std::fprintf(stderr, "compute   %s\n", compute_description(engine).c_str());
}

GenerateOptions generate_options(int max_new_tokens, bool ignore_eos, float temperature, int top_k, float top_p,
                                 float repeat_penalty, uint64_t seed) {
  GenerateOptions options;
  options.max_new_tokens = max_new_tokens;
  options.stop_at_eos = !ignore_eos;
  options.sampling = {temperature, top_k, top_p, repeat_penalty, seed};
  return options;
}

// Runs the prompts and writes the output: one prompt streams (text or ids) as it is generated;
// several print one line each at the end (ids, or JSON lines with the text).
struct Output {
  const Tokenizer* tokenizer = nullptr;  // null: ids only
  bool ids = false;
};

std::vector<std::vector<int>> run_and_print(Engine& engine, const std::vector<std::vector<int>>& prompts,
                                            const GenerateOptions& options, const Output& output, const RunOptions& run,
                                            double load_seconds) {
  const bool stream = prompts.size() == 1;
  const bool text = output.tokenizer && !output.ids;
  std::optional<StreamingDecoder> decoder;
  if (stream && text) {
    decoder.emplace(*output.tokenizer, true);
    for (int id : prompts[0]) decoder->push(id);  // decode in the prompt's context, print only what follows
  }
  const double start = now_seconds();
  double first_token = 0;
  int produced = 0;
  auto outputs = generate(engine, prompts, options, [&](int, int token) {
    if (produced++ == 0) first_token = now_seconds();
    if (!stream) return;
    if (decoder) std::fputs(decoder->push(token).c_str(), stdout);
    else std::printf(produced == 1 ? "%d" : " %d", token);
    std::fflush(stdout);
  });
  const double finished = now_seconds();
  if (stream) {
    if (decoder) std::fputs(decoder->finish().c_str(), stdout);
    std::printf("\n");
  } else {
    for (size_t p = 0; p < outputs.size(); p++) {
      if (text) {
        std::vector<int32_t> all(prompts[p].begin(), prompts[p].end()), generated(outputs[p].begin(), outputs[p].end());
        const std::string before = output.tokenizer->decode(all, true);
        all.insert(all.end(), generated.begin(), generated.end());
        std::string after = output.tokenizer->decode(all, true);
        const std::string text_generated = after.substr(std::min(before.size(), after.size()));
        std::printf("%s\n", nlohmann::ordered_json({{"prompt", p}, {"line", p + 1}, {"text", text_generated}}).dump().c_str());
      } else {
        for (size_t i = 0; i < outputs[p].size(); i++) std::printf(i ? " %d" : "%d", outputs[p][i]);
        std::printf("\n");
      }
    }
  }
  std::fflush(stdout);
  if (!run.quiet) {
    size_t prompt_tokens = 0;
    for (const auto& prompt : prompts) prompt_tokens += prompt.size();
    const int decoded = std::max(0, produced - static_cast<int>(prompts.size()));
    print_run_stats(engine, load_seconds, produced ? first_token - start : 0, static_cast<int>(prompt_tokens),
                    produced ? finished - first_token : 0, decoded, static_cast<int>(prompts.size()), run.profile);
  }
  return outputs;
}

}  // namespace

int run_generate(const GenerateArgs& args) {
  const int sources = args.has_prompt + !args.prompt_ids.empty() + !args.prompts_file.empty() + !args.batch_file.empty();
  if (sources != 1) usage_fail("generate needs exactly one of --prompt, --prompt-ids, --prompts-file, --batch-file");
  const bool text_input = args.has_prompt || !args.prompts_file.empty();
  if (args.chat && !text_input) usage_fail("--chat needs a text prompt (--prompt or --prompts-file)");
  std::optional<Tokenizer> tokenizer;
  // Text output needs the tokenizer too, when the model has one.
  if (text_input || !args.output_ids) {
    if (text_input) tokenizer.emplace(load_tokenizer(args.run.model));
    else if (std::filesystem::exists(std::filesystem::path(args.run.model) / "tokenizer.json"))
      tokenizer.emplace(load_tokenizer(args.run.model));
  }
  GenerateOptions options = generate_options(args.max_new_tokens, args.ignore_eos, args.temperature, args.top_k, args.top_p,
                                             args.repeat_penalty, args.seed);
  std::vector<std::vector<int>> prompts;
  auto encode = [&](const std::string& text) {
    if (args.chat) {
      nlohmann::ordered_json messages = nlohmann::ordered_json::array();
      if (!args.system.empty()) messages.push_back({{"role", "system"}, {"content", args.system}});
      messages.push_back({{"role", "user"}, {"content", text}});
      ChatPrompt chat = render_chat(*tokenizer, messages, args.run.model);
      if (!args.ignore_eos) options.stop_token_ids = chat.stop_ids;
      return std::vector<int>(chat.ids.begin(), chat.ids.end());
    }
    auto ids = tokenizer->encode(text, true, args.parse_special);
    return std::vector<int>(ids.begin(), ids.end());
  };
  if (args.has_prompt) prompts.push_back(encode(args.prompt));
  else if (!args.prompt_ids.empty()) prompts.push_back(parse_ids(args.prompt_ids, "--prompt-ids"));
  else if (!args.prompts_file.empty())
    prompts = read_lines(args.prompts_file, [&](const std::string& line, int) { return encode(line); });
  else
    prompts = read_lines(args.batch_file, [&](const std::string& line, int number) {
      return parse_ids(line, args.batch_file + ":" + std::to_string(number));
    });
  for (const auto& prompt : prompts)
    if (prompt.empty()) fail("a prompt encodes to no tokens");
  const double start = now_seconds();
  Engine engine(args.run.model, engine_options(args.run));
  const int vocab = engine.config().vocab_size;
  // Before the prompts: an id the tokenizer gives but the model lacks is the tokenizer's fault.
  if (tokenizer) tokenizer->check_fits_model(vocab);
  for (size_t p = 0; p < prompts.size(); p++) {
    const std::string& file = args.prompts_file.empty() ? args.batch_file : args.prompts_file;
    const std::string which = file.empty() ? "the prompt" : file + ":" + std::to_string(p + 1) + ": the prompt";
    for (int id : prompts[p])
      if (id >= vocab)
        fail(which + ": token id " + std::to_string(id) + " is outside the model's vocabulary (0.." + std::to_string(vocab - 1) + ")");
    check_context(engine.config(), static_cast<int64_t>(prompts[p].size()) + args.max_new_tokens, args.run.allow_long_context,
                  which + " (" + std::to_string(prompts[p].size()) + " tokens) and --max-new-tokens " + std::to_string(args.max_new_tokens));
  }
  run_and_print(engine, prompts, options, {tokenizer ? &*tokenizer : nullptr, args.output_ids}, args.run,
                now_seconds() - start);
  return 0;
}

bool blank(const std::string& text) { return text.find_first_not_of(" \t\r\n") == std::string::npos; }

int run_chat(const ChatArgs& args) {
  if (args.has_message && blank(args.message)) usage_fail("--message is empty: give the user's message (or leave --message out to chat on stdin)");
  const Tokenizer tokenizer = load_tokenizer(args.run.model);
  const double start = now_seconds();
  Engine engine(args.run.model, engine_options(args.run));
  tokenizer.check_fits_model(engine.config().vocab_size);
  const double load_seconds = now_seconds() - start;
  GenerateOptions options = generate_options(args.max_new_tokens, false, args.temperature, args.top_k, args.top_p,
                                             args.repeat_penalty, args.seed);
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  if (!args.system.empty()) messages.push_back({{"role", "system"}, {"content", args.system}});
  const bool interactive = !args.has_message;
  const bool terminal = isatty(STDIN_FILENO) && isatty(STDERR_FILENO);
  std::string line;
  int turns = 0;
  while (true) {
    if (interactive) {
      if (terminal) std::fprintf(stderr, "> ");
      if (!std::getline(std::cin, line)) break;
      if (blank(line)) {  // an empty turn is not sent to the model
        if (terminal) std::fprintf(stderr, "(empty message skipped: type a message, or Ctrl-D to end)\n");
        continue;
      }
    } else {
      line = args.message;
    }
    messages.push_back({{"role", "user"}, {"content", line}});
    ChatPrompt chat = render_chat(tokenizer, messages, args.run.model);
    const std::string too_long =
        context_problem(engine.config(), static_cast<int64_t>(chat.ids.size()) + args.max_new_tokens, args.run.allow_long_context,
                        "the conversation (" + std::to_string(chat.ids.size()) + " tokens) and --max-new-tokens " +
                            std::to_string(args.max_new_tokens));
    if (!too_long.empty()) {
      if (!interactive) fail(too_long);
      std::fprintf(stderr, "layerwise: error: %s; that message was not sent\n", too_long.c_str());
      messages.erase(messages.end() - 1);
      continue;
    }
    turns++;
    options.stop_token_ids = chat.stop_ids;
    RunOptions report = args.run;
    report.quiet = args.run.quiet || interactive;
    auto outputs = run_and_print(engine, {std::vector<int>(chat.ids.begin(), chat.ids.end())}, options, {&tokenizer, false},
                                 report, load_seconds);
    std::vector<int32_t> reply(outputs[0].begin(), outputs[0].end());
    messages.push_back({{"role", "assistant"}, {"content", tokenizer.decode(reply, true)}});
    if (!interactive) break;
  }
  if (turns == 0 && !terminal) fail("chat: stdin held no message (one user turn per line), and no --message was given");
  return 0;
}

}  // namespace lw::cli
