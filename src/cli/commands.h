// The layerwise commands, one function each; main.cpp parses flags into these structs.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "runtime/engine.h"

namespace lw::cli {

// Bad usage (a missing, conflicting or malformed option): exit status 2, as for the options
// the parser refuses; lw::Error (bad input, a refused run) is exit status 1.
class UsageError : public Error {
 public:
  using Error::Error;
};
[[noreturn]] void usage_fail(const std::string& problem);

struct RunOptions {  // how the engine runs
  std::string model, max_memory, compute_dtype, io = "auto";
  std::string kv_dtype;  // "" for the default (default_kv_dtype in runtime/engine.h)
  int threads = 0;
  bool no_prefetch = false, quiet = false, profile = false;
  bool allow_long_context = false;  // run sequences past the positions the model is made for
};

struct GenerateArgs {
  RunOptions run;
  std::string prompt, prompt_ids, prompts_file, batch_file, system;
  int max_new_tokens = 128, top_k = 0;
  float temperature = 0, top_p = 1, repeat_penalty = 1;
  uint64_t seed = 0;
  bool has_prompt = false;  // --prompt was given (an empty prompt is valid: BOS only)
  bool output_ids = false, ignore_eos = false, parse_special = false, chat = false;
};

struct ChatArgs {
  RunOptions run;
  std::string message, system;
  bool has_message = false;  // --message was given (then it must not be empty)
  int max_new_tokens = 512;
  float temperature = 0, top_p = 1, repeat_penalty = 1;
  int top_k = 0;
  uint64_t seed = 0;
};

struct TokenizeArgs {
  std::string model, text, file;
  bool ids = false, pieces = false, parse_special = false, no_special_tokens = false;
};

struct ScoreArgs {
  RunOptions run;
  std::string input, output;
  bool no_share_prefix = false;
  int max_batch_rows = 0;
};

struct PerplexityArgs {
  RunOptions run;
  std::string text;
  std::string save_logprobs, kl_divergence;  // files (score/divergence.h)
  int context = 0, stride = 0;
  bool chunks = false;  // llama-perplexity's chunks instead of sliding windows
};

struct BenchArgs {
  RunOptions run;
  int prompt_tokens = 512, decode_tokens = 128, repeat = 5;
  uint32_t seed = 1;
  bool json = false;
};

int run_generate(const GenerateArgs& args);
int run_score(const ScoreArgs& args);
int run_bench(const BenchArgs& args);
int run_perplexity(const PerplexityArgs& args);
int run_chat(const ChatArgs& args);
struct InfoArgs {
  std::string model, max_memory, io = "auto", kv_dtype;
  int context = 0, batch = 1;
  bool no_measure = false, allow_long_context = false;
};

int run_info(const InfoArgs& args);
int run_tokenize(const TokenizeArgs& args);
int run_detokenize(const std::string& model, const std::string& ids, bool skip_special);

// Shared helpers
uint64_t memory_option(const std::string& text);
EngineOptions engine_options(const RunOptions& run);
std::string compute_description(const Engine& engine);
// "f16, 2 bytes a value (default: ...)": the KV cache's element type and where it came from.
std::string kv_description(const Engine& engine);
// A --kv-dtype value ("f32", "f16", "bf16", or the long spellings): nullopt for "" (the default).
std::optional<DType> kv_dtype_option(const std::string& text);
std::string seconds_text(double seconds);  // "1.234 s"
// Statistics on stderr (report.cpp): memory alone, or sweeps, reads, memory and (profile) a
// line per sweep and per layer. sequences > 0: the run generated for that many sequences, so
// its one-token sweeps are summarised and called bound by reading or by computing.
void print_memory_stats(const Engine& engine);
void print_stream_report(const Engine& engine, int sequences, bool profile);
std::vector<int> parse_ids(const std::string& text, const std::string& where);
// One rule on length for every command: a sequence needs no more positions than the model is
// made for (context_limit in model/config.h) unless --allow-long-context. Returns why `what`
// (e.g. "the prompt (500 tokens) and --max-new-tokens 100") cannot run, or "" when it can.
std::string context_problem(const ModelConfig& config, int64_t positions, bool allow_long, const std::string& what);
void check_context(const ModelConfig& config, int64_t positions, bool allow_long, const std::string& what);  // throws

}  // namespace lw::cli
