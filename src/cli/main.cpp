// layerwise: run language models larger than memory by streaming them one layer at a time.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "checkpoint/split.h"
#include "cli/commands.h"
#include "common/error.h"
#include "common/sizes.h"

namespace {

using namespace lw::cli;

// Numbers on the command line: the whole word must be a finite number (no NaN, no trailing
// text) in the option's range, and the message says what was wanted and what came.
enum class Wanted { PositiveInteger, NonNegativeInteger, PositiveNumber, NonNegativeNumber, Probability };

std::string number_problem(const std::string& text, Wanted wanted, unsigned long long least, unsigned long long most) {
  const bool integer = wanted == Wanted::PositiveInteger || wanted == Wanted::NonNegativeInteger;
  std::string what;
  switch (wanted) {
    case Wanted::PositiveInteger: what = least > 1 ? "an integer of at least " + std::to_string(least) : "a positive integer"; break;
    case Wanted::NonNegativeInteger: what = "a whole number (0 or more)"; break;
    case Wanted::PositiveNumber: what = "a positive number"; break;
    case Wanted::NonNegativeNumber: what = "a number of 0 or more"; break;
    case Wanted::Probability: what = "a number from 0 to 1"; break;
  }
  const std::string problem = "must be " + what + " (got '" + text + "')";
  // strtoull and strtod accept leading spaces and signs ("-1" wraps around): refuse them first.
  if (text.empty() || std::isspace(static_cast<unsigned char>(text[0])) || (integer && text[0] == '-')) return problem;
  char* end = nullptr;
  errno = 0;
  if (integer) {
    const unsigned long long value = std::strtoull(text.c_str(), &end, 10);
    if (*end != '\0' || value < least) return problem;
    if (errno == ERANGE || value > most) return "must be at most " + std::to_string(most) + " (got " + text + ")";
    return "";
  }
  const double value = std::strtod(text.c_str(), &end);
  if (*end != '\0' || !std::isfinite(value)) return problem;
  if ((wanted == Wanted::PositiveNumber && !(value > 0)) || (wanted == Wanted::NonNegativeNumber && !(value >= 0)) ||
      (wanted == Wanted::Probability && !(value >= 0 && value <= 1)))
    return problem;
  return "";
}

// `most` bounds integers (the option's type); `least` is at least 1 for positive integers.
CLI::Validator number(Wanted wanted, unsigned long long least = 1, unsigned long long most = INT_MAX) {
  if (wanted == Wanted::NonNegativeInteger) least = 0;
  return CLI::Validator([=](std::string& text) { return number_problem(text, wanted, least, most); }, "", "");
}

CLI::Validator memory_size() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        try {
          lw::parse_size(text);
          return "";
        } catch (const lw::Error& e) {
          return e.what();
        }
      },
      "SIZE", "");
}

const std::vector<std::string> kKvDtypes = {"f32", "f16", "bf16", "float32", "float16", "bfloat16"};
constexpr const char* kKvDtypeHelp =
    "Element type of the KV cache: f32, f16 or bf16 (half the memory; keys and values rounded to nearest even, "
    "attention still in float32). Default: the weights' precision (f32 for float32 weights, bf16 for bfloat16, "
    "f16 for float16 and quantized)";

void add_run_options(CLI::App* command, RunOptions& run) {
  command->add_option("--model", run.model, "Hugging Face model directory, layerwise split directory or GGUF file")->required();
  command->add_option("--max-memory", run.max_memory,
                      "Memory budget for everything the engine holds, e.g. 4GiB, 300MiB (default: 80% of available memory)")
      ->check(memory_size());
  command->add_option("--threads", run.threads, "Compute threads (default: all cores; at most the cores there are)")
      ->check(number(Wanted::PositiveInteger));
  command->add_option("--compute-dtype", run.compute_dtype,
                      "Precision of matrix products: f32; bf16 (AMX where the CPU has it; activations rounded to "
                      "bfloat16); or q8 (block-quantized weights times activations quantized to int8 per 32 values, "
                      "integer products). Default: q8 when any matrix is block-quantized, bf16 "
                      "for BF16 checkpoints, else f32")
      ->check(CLI::IsMember({"f32", "bf16", "q8", "float32", "bfloat16"}));
  command->add_option("--kv-dtype", run.kv_dtype, kKvDtypeHelp)->check(CLI::IsMember(kKvDtypes));
  command->add_option("--io", run.io,
                      "Read weights through the page cache (cached), around it with O_DIRECT (direct), or decide from "
                      "whether they can stay cached beside the budget (auto)")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "cached", "direct"}));
  command->add_flag("--no-prefetch", run.no_prefetch, "Read each layer only when needed (a baseline for measurements)");
  command->add_flag("--profile", run.profile, "Also print a line per sweep and per layer: reading, waiting, computing");
  command->add_flag("--quiet", run.quiet, "No statistics on stderr");
  command->add_flag("--allow-long-context", run.allow_long_context,
                    "Run sequences longer than the model is made for (max_position_embeddings, stretched by linear or "
                    "dynamic rope scaling); refused by default");
}

template <typename Args>
void add_sampling_options(CLI::App* command, Args& args) {
  command->add_option("--max-new-tokens", args.max_new_tokens, "Tokens to generate per prompt")->capture_default_str()->check(number(Wanted::NonNegativeInteger));
  command->add_option("--temperature", args.temperature, "Sampling temperature; 0 is greedy")->capture_default_str()->check(number(Wanted::NonNegativeNumber));
  command->add_option("--top-k", args.top_k, "Sample from the k most likely tokens; 0 is off")->capture_default_str()->check(number(Wanted::NonNegativeInteger));
  command->add_option("--top-p", args.top_p, "Sample from the smallest set whose probability reaches p")->capture_default_str()->check(number(Wanted::Probability));
  command->add_option("--repeat-penalty", args.repeat_penalty, "Penalty for tokens already in the sequence (transformers' repetition_penalty)")->capture_default_str()->check(number(Wanted::PositiveNumber));
  command->add_option("--seed", args.seed, "Random seed for sampling")->capture_default_str()->check(number(Wanted::NonNegativeInteger, 0, UINT64_MAX));
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"layerwise: run language models larger than memory by streaming them from disk one layer at a time"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "layerwise 0.1.0");
  const std::vector<std::string> commands = {"generate", "chat", "score", "perplexity", "bench", "info", "split", "tokenize", "detokenize"};

  GenerateArgs generate_args;
  auto* generate = app.add_subcommand("generate", "Continue a prompt (text, or token ids)");
  add_run_options(generate, generate_args.run);
  auto* prompt_option = generate->add_option("--prompt", generate_args.prompt, "Prompt text (BOS added as the tokenizer config says)");
  generate->add_option("--prompt-ids", generate_args.prompt_ids, "Prompt token ids, space separated (include BOS)");
  generate->add_option("--prompts-file", generate_args.prompts_file, "File with one text prompt per line; all share each layer load; prints JSON lines");
  generate->add_option("--batch-file", generate_args.batch_file, "File with one prompt of token ids per line; all share each layer load");
  generate->add_flag("--chat", generate_args.chat, "Wrap the prompt as a user message in the model's chat template");
  generate->add_option("--system", generate_args.system, "System message for --chat");
  generate->add_flag("--parse-special", generate_args.parse_special, "Recognise special tokens (e.g. <|im_start|>) written in the prompt text");
  add_sampling_options(generate, generate_args);
  generate->add_flag("--output-ids", generate_args.output_ids, "Print generated token ids instead of text");
  generate->add_flag("--ignore-eos", generate_args.ignore_eos, "Do not stop at end-of-sequence (or, with --chat, end-of-turn) tokens");

  ChatArgs chat_args;
  auto* chat = app.add_subcommand("chat", "Talk to a chat model: interactive on stdin, or one turn with --message");
  add_run_options(chat, chat_args.run);
  auto* message_option = chat->add_option("--message", chat_args.message, "One user message: print the reply and exit");
  chat->add_option("--system", chat_args.system, "System message");
  add_sampling_options(chat, chat_args);

  ScoreArgs score_args;
  auto* score = app.add_subcommand("score", "Log-likelihoods of choices after a prefix (multiple choice, lm-eval loglikelihood), many rows per layer sweep");
  add_run_options(score, score_args.run);
  score->add_option("--input", score_args.input,
                    "JSON lines: {\"id\": ..., \"prefix\": TEXT, \"choices\": [TEXT, ...]} (or prefix_ids / choices_ids)")
      ->required();
  score->add_option("--output", score_args.output, "Write the results here (default: stdout), one JSON line per input line");
  score->add_flag("--no-share-prefix", score_args.no_share_prefix, "Run every prefix + choice on its own (a baseline for measurements)");
  score->add_option("--max-batch-rows", score_args.max_batch_rows, "At most this many rows per layer sweep (default: as many as fit)")
      ->check(number(Wanted::PositiveInteger));

  PerplexityArgs perplexity_args;
  auto* perplexity = app.add_subcommand(
      "perplexity", "Perplexity of a text file, in sliding windows as transformers' guide computes it, or in llama-perplexity's chunks");
  add_run_options(perplexity, perplexity_args.run);
  perplexity->add_option("--text", perplexity_args.text, "The text file")->required();
  perplexity->add_option("--context", perplexity_args.context,
                         "Window (or chunk) length in tokens (default: the model's max positions, at most 4096)")
      ->check(number(Wanted::PositiveInteger, 2));
  auto* stride = perplexity->add_option("--stride", perplexity_args.stride, "Tokens between window starts (default: half the window)")
                     ->check(number(Wanted::PositiveInteger));
  perplexity->add_flag("--chunks", perplexity_args.chunks,
                       "Score the positions llama-perplexity -c CONTEXT scores: the text cut into back-to-back chunks of "
                       "--context tokens (a partial last chunk unused), each run alone (its first token replaced by BOS "
                       "if the tokenizer adds one), scoring the tokens after its first half")
      ->excludes(stride);
  perplexity->add_option("--save-logprobs", perplexity_args.save_logprobs,
                         "Also write every scored position's log-probabilities to this file (float32, vocab x tokens: "
                         "large), for --kl-divergence runs of another model on the same text");
  perplexity->add_option("--kl-divergence", perplexity_args.kl_divergence,
                         "Also report the KL divergence of this model's next-token distributions from those a "
                         "--save-logprobs run wrote to this file (same text, tokenizer and vocabulary)");

  BenchArgs bench_args;
  auto* bench = app.add_subcommand("bench", "Prefill and decode speed on random token ids, measured as llama.cpp's llama-bench does");
  add_run_options(bench, bench_args.run);
  bench->add_option("--prompt", bench_args.prompt_tokens, "Prefill test: tokens in one pass (0: none)")->capture_default_str()->check(number(Wanted::NonNegativeInteger));
  bench->add_option("--decode", bench_args.decode_tokens, "Decode test: tokens generated one per pass from an empty cache (0: none)")
      ->capture_default_str()->check(number(Wanted::NonNegativeInteger));
  bench->add_option("--repeat", bench_args.repeat, "Measured runs of each test, after one warm-up pass")->capture_default_str()->check(number(Wanted::PositiveInteger));
  bench->add_option("--seed", bench_args.seed, "Seed of the random token ids")->capture_default_str()->check(number(Wanted::NonNegativeInteger, 0, UINT32_MAX));
  bench->add_flag("--json", bench_args.json, "Print one JSON object instead of a table");

  InfoArgs info_args;
  auto* info = app.add_subcommand("info", "Show a model's architecture, unit sizes, the memory plan for a budget and its predicted speed");
  info->add_option("--model", info_args.model, "Hugging Face model directory, layerwise split directory or GGUF file")->required();
  info->add_option("--max-memory", info_args.max_memory, "Memory budget to plan for, e.g. 2GiB")->check(memory_size());
  info->add_option("--context", info_args.context, "Tokens per sequence to plan the KV cache for (default: max positions, at most 2048)")
      ->check(number(Wanted::PositiveInteger));
  info->add_option("--batch", info_args.batch, "Sequences to plan for")->capture_default_str()->check(number(Wanted::PositiveInteger));
  info->add_option("--io", info_args.io, "Plan reads through the page cache (cached), around it (direct) or either (auto)")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "cached", "direct"}));
  info->add_option("--kv-dtype", info_args.kv_dtype, kKvDtypeHelp)->check(CLI::IsMember(kKvDtypes));
  info->add_flag("--no-measure", info_args.no_measure, "Skip measuring read and kernel speeds (no predicted sweep time)");
  info->add_flag("--allow-long-context", info_args.allow_long_context, "Plan for a --context longer than the model is made for");

  lw::SplitOptions split_options;
  std::string split_dtype;
  bool verify = false;
  auto* split = app.add_subcommand("split", "Rewrite a checkpoint as one file per layer, for one sequential read each");
  split->add_option("--model", split_options.model, "Source: a Hugging Face model directory, a split directory or a GGUF file");
  split->add_option("--out", split_options.out, "Destination directory")->required();
  split->add_option("--dtype", split_dtype, "Store tensors as f32, f16 or bf16 (default: as in the source)")
      ->check(CLI::IsMember({"f32", "f16", "bf16", "float32", "float16", "bfloat16"}));
  split->add_option("--quantize", split_options.quantize,
                    "Quantize the weight matrices of a float checkpoint (HF or F32/F16/BF16 GGUF): q8_0, q4_0, q4_k, "
                    "q5_k, q6_k or iq4_xs (every matrix in that type), or q4_k_m (llama.cpp's mix: Q6_K for some "
                    "v_proj/down_proj, Q4_K elsewhere). As llama-quantize, lm_head (the embedding when tied) is Q6_K "
                    "but for q8_0. Rows not a multiple of 256 fall back to a 32-block "
                    "type (Q4_K->Q5_0, Q5_K->Q5_1, Q6_K->Q8_0, IQ4_XS->IQ4_NL); norms and other vectors stay float. "
                    "Not with --dtype; a quantized source is refused")
      ->check(CLI::IsMember({"q8_0", "q4_0", "q4_k", "q5_k", "q6_k", "iq4_xs", "q4_k_m"}));
  split->add_flag("--verify", verify, "Recheck every file's size and checksum against the manifest (alone: check an existing split)");
  split->add_flag("--quiet", split_options.quiet, "No progress on stderr");

  TokenizeArgs tokenize_args;
  auto* tokenize = app.add_subcommand("tokenize", "Show how the model's tokenizer splits a text");
  tokenize->add_option("--model", tokenize_args.model, "Model directory (with tokenizer.json) or GGUF file")->required();
  tokenize->add_option("text", tokenize_args.text, "The text");
  tokenize->add_option("--file", tokenize_args.file, "Tokenize this file instead (reports speed on stderr)");
  tokenize->add_flag("--ids", tokenize_args.ids, "Print ids on one line (the default)");
  tokenize->add_flag("--pieces", tokenize_args.pieces, "Print one 'id<TAB>piece' per line");
  tokenize->add_flag("--parse-special", tokenize_args.parse_special, "Recognise special tokens written in the text");
  tokenize->add_flag("--no-special-tokens", tokenize_args.no_special_tokens, "Do not add BOS/EOS");

  std::string detokenize_model, detokenize_ids;
  bool skip_special = false;
  auto* detokenize = app.add_subcommand("detokenize", "Turn token ids back into text");
  detokenize->add_option("--model", detokenize_model, "Model directory (with tokenizer.json) or GGUF file")->required();
  detokenize->add_option("ids", detokenize_ids, "Token ids, space separated")->required();
  detokenize->add_flag("--skip-special", skip_special, "Leave out special tokens");

  const std::string first = argc > 1 ? argv[1] : "";
  if (!first.empty() && first[0] != '-' && std::find(commands.begin(), commands.end(), first) == commands.end()) {
    std::fprintf(stderr, "layerwise: error: unknown command '%s' (commands: generate, chat, score, perplexity, bench, info, split, tokenize, detokenize; see --help)\n",
                 argv[1]);
    return 2;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    std::fprintf(stderr, "layerwise: error: %s (see --help)\n", e.what());
    return 2;
  }

  try {
    if (generate->parsed()) {
      generate_args.has_prompt = prompt_option->count() > 0;
      return run_generate(generate_args);
    }
    if (chat->parsed()) {
      chat_args.has_message = message_option->count() > 0;
      return run_chat(chat_args);
    }
    if (score->parsed()) return run_score(score_args);
    if (perplexity->parsed()) return run_perplexity(perplexity_args);
    if (bench->parsed()) return run_bench(bench_args);
    if (info->parsed()) return run_info(info_args);
    if (tokenize->parsed()) {
      if (tokenize_args.text.empty() && tokenize_args.file.empty()) usage_fail("tokenize needs a text or --file");
      return run_tokenize(tokenize_args);
    }
    if (detokenize->parsed()) return run_detokenize(detokenize_model, detokenize_ids, skip_special);
    if (split->parsed()) {
      if (split_options.model.empty() && !verify) usage_fail("split needs --model (or --verify alone to check --out)");
      if (!split_dtype.empty() && !split_options.quantize.empty())
        usage_fail("split takes --quantize or --dtype, not both (--quantize keeps vectors in the source's float type)");
      if (!split_dtype.empty()) split_options.dtype = lw::dtype_from_user(split_dtype);
      if (!split_options.model.empty()) {
        auto result = lw::split_checkpoint(split_options);
        std::fprintf(stderr, "split: %d unit files written (%s), %d kept from an interrupted run -> %s\n", result.units_written,
                     lw::format_size(result.bytes_written).c_str(), result.units_reused, split_options.out.c_str());
      }
      if (verify) {
        int units = lw::verify_split(split_options.out, split_options.quiet);
        std::fprintf(stderr, "verify: %d unit files match the manifest\n", units);
      }
      return 0;
    }
  } catch (const UsageError& e) {
    std::fprintf(stderr, "layerwise: error: %s (see --help)\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "layerwise: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
