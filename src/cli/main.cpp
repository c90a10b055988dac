// layerwise: run a model larger than memory by streaming it one layer at a time.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "checkpoint/split.h"
#include "common/error.h"
#include "common/sizes.h"
#include "common/system.h"
#include "runtime/engine.h"
#include "runtime/generate.h"

namespace {

std::vector<int> parse_ids(const std::string& text, const std::string& where) {
  std::vector<int> ids;
  std::istringstream in(text);
  std::string word;
  while (in >> word) {
    size_t used = 0;
    long value = -1;
    try {
      value = std::stol(word, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != word.size() || value < 0 || value > 1 << 30) lw::fail(where, "'" + word + "' is not a token id");
    ids.push_back(static_cast<int>(value));
  }
  return ids;
}

std::vector<std::vector<int>> read_batch_file(const std::string& path) {
  std::ifstream file(path);
  if (!file) lw::fail(path, "cannot open");
  std::vector<std::vector<int>> prompts;
  std::string line;
  int number = 0;
  while (std::getline(file, line)) {
    number++;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    prompts.push_back(parse_ids(line, path + ":" + std::to_string(number)));
  }
  if (prompts.empty()) lw::fail(path, "holds no prompts (one line of token ids per prompt)");
  return prompts;
}

uint64_t memory_option(const std::string& text) { return text.empty() ? 0 : lw::parse_size(text); }

std::string seconds_text(double seconds) {
  char text[32];
  std::snprintf(text, sizeof text, "%.3f s", seconds);
  return text;
}

void print_run_stats(const lw::Engine& engine, double load_seconds, double prefill_seconds, int prompt_tokens,
                     double decode_seconds, int decode_tokens) {
  const lw::EngineStats stats = engine.stats();
  const auto& stream = stats.stream;
  std::fprintf(stderr, "load      %s\n", seconds_text(load_seconds).c_str());
  std::fprintf(stderr, "prefill   %d tokens in %s (%.1f tokens/s)\n", prompt_tokens, seconds_text(prefill_seconds).c_str(),
               prefill_seconds > 0 ? prompt_tokens / prefill_seconds : 0.0);
  std::fprintf(stderr, "decode    %d tokens in %s (%.2f tokens/s)\n", decode_tokens, seconds_text(decode_seconds).c_str(),
               decode_seconds > 0 ? decode_tokens / decode_seconds : 0.0);
  const double hidden = stream.read_seconds > 0 ? 100.0 * (1.0 - std::min(1.0, stream.wait_seconds / stream.read_seconds)) : 100.0;
  std::fprintf(stderr, "sweeps    %d; layer loads %llu; read %s in %s (%.2f GB/s); waited for reads %s (%.0f%% of reading hidden)\n",
               stats.sweeps, static_cast<unsigned long long>(stream.unit_loads), lw::format_size(stream.bytes_read).c_str(),
               seconds_text(stream.read_seconds).c_str(),
               stream.read_seconds > 0 ? static_cast<double>(stream.bytes_read) / stream.read_seconds / 1e9 : 0.0,
               seconds_text(stream.wait_seconds).c_str(), hidden);
  std::fprintf(stderr, "memory    budget %s; plan %s; peak RSS %s\n", lw::format_size(engine.budget_bytes()).c_str(),
               lw::format_size(engine.active_plan().total_bytes()).c_str(), lw::format_size(stats.peak_rss_bytes).c_str());
}

struct GenerateArgs {
  std::string model, prompt_ids, batch_file, max_memory;
  int max_new_tokens = 128, top_k = 0, threads = 0;
  float temperature = 0, top_p = 1, repeat_penalty = 1;
  uint64_t seed = 0;
  bool output_ids = false, ignore_eos = false, no_prefetch = false, quiet = false;
};

int run_generate(const GenerateArgs& args) {
  std::vector<std::vector<int>> prompts;
  if (!args.batch_file.empty()) prompts = read_batch_file(args.batch_file);
  else prompts.push_back(parse_ids(args.prompt_ids, "--prompt-ids"));
  if (prompts.size() == 1 && prompts[0].empty()) lw::fail("--prompt-ids: no token ids given");
  const double start = lw::now_seconds();
  lw::Engine engine(args.model, {memory_option(args.max_memory), args.threads, !args.no_prefetch});
  const double loaded = lw::now_seconds();
  size_t prompt_tokens = 0;
  for (const auto& prompt : prompts) prompt_tokens += prompt.size();
  lw::GenerateOptions options;
  options.max_new_tokens = args.max_new_tokens;
  options.stop_at_eos = !args.ignore_eos;
  options.sampling = {args.temperature, args.top_k, args.top_p, args.repeat_penalty, args.seed};
  // A single prompt streams its tokens as they come; a batch prints one line per prompt at the end.
  const bool stream = prompts.size() == 1;
  double first_token = 0;
  int produced = 0;
  auto outputs = lw::generate(engine, prompts, options, [&](int, int token) {
    if (produced++ == 0) first_token = lw::now_seconds();
    if (stream) {
      std::printf(produced == 1 ? "%d" : " %d", token);
      std::fflush(stdout);
    }
  });
  const double finished = lw::now_seconds();
  for (const auto& output : outputs) {
    if (stream) break;
    for (size_t i = 0; i < output.size(); i++) std::printf(i ? " %d" : "%d", output[i]);
    std::printf("\n");
  }
  if (stream) std::printf("\n");
  std::fflush(stdout);
  if (!args.quiet) {
    const int decoded = std::max(0, produced - static_cast<int>(prompts.size()));
    print_run_stats(engine, loaded - start, produced ? first_token - loaded : 0, static_cast<int>(prompt_tokens),
                    produced ? finished - first_token : 0, decoded);
  }
  (void)args.output_ids;  // ids are the only output until the tokenizer lands
  return 0;
}

int run_info(const std::string& model, const std::string& max_memory, int context, int batch) {
  lw::Engine engine(model, {memory_option(max_memory), 0, true});
  const auto& checkpoint = engine.checkpoint();
  const auto& c = engine.config();
  if (context <= 0) context = std::min(c.max_position, 2048);
  // Plan first: a budget that cannot work is refused before anything is printed.
  const lw::MemoryPlan plan = engine.plan({batch, context, batch * context, false});
  const std::string format = checkpoint.format == lw::Checkpoint::Format::Split
                                 ? "layerwise split, dtype " + checkpoint.split_dtype
                                 : "Hugging Face";
  std::printf("model         %s (%s)\n", model.c_str(), format.c_str());
  std::printf("architecture  %s: %d layers, hidden %d, heads %d (kv %d, head_dim %d), ffn %d, vocab %d\n",
              c.architecture.c_str(), c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim,
              c.intermediate_size, c.vocab_size);
  const char* rope_names[] = {"default", "linear", "dynamic", "llama3"};
  std::printf("rope          theta %g, scaling %s (factor %g); max positions %d; tied head %s\n", c.rope.theta,
              rope_names[static_cast<int>(c.rope.type)], c.rope.factor, c.max_position, c.tie_word_embeddings ? "yes" : "no");
  std::printf("parameters    %.3f M\n", static_cast<double>(checkpoint.parameter_count()) / 1e6);
  std::printf("units         (bytes on disk, in sweep order)\n");
  uint64_t total = 0;
  for (const auto& unit : checkpoint.units) {
    std::printf("  %-10s %s%s\n", unit.recipe.name.c_str(), lw::format_size(unit.bytes()).c_str(),
                unit.recipe.kind == lw::UnitKind::Embed ? " (rows read on demand)" : "");
    total += unit.bytes();
  }
  std::printf("  total      %s\n", lw::format_size(total).c_str());
  std::printf("plan          budget %s%s, %d sequence(s) of %d tokens\n", lw::format_size(engine.budget_bytes()).c_str(),
              max_memory.empty() ? " (default: 80% of available memory)" : "", batch, context);
  std::vector<std::string> names;
  for (const auto& unit : checkpoint.units) names.push_back(unit.recipe.name);
  std::printf("%s", lw::describe_plan(plan, names).c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"layerwise: run language models larger than memory by streaming them from disk one layer at a time"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "layerwise 0.1.0");

  GenerateArgs generate_args;
  auto* generate = app.add_subcommand("generate", "Generate tokens from a prompt of token ids");
  generate->add_option("--model", generate_args.model, "Hugging Face model directory or layerwise split directory")->required();
  auto* prompt_option = generate->add_option("--prompt-ids", generate_args.prompt_ids, "Prompt token ids, space separated (include BOS)");
  auto* batch_option = generate->add_option("--batch-file", generate_args.batch_file, "File with one prompt of token ids per line; all prompts share each layer load");
  prompt_option->excludes(batch_option);
  generate->add_option("--max-new-tokens", generate_args.max_new_tokens, "Tokens to generate per prompt")->capture_default_str()->check(CLI::NonNegativeNumber);
  generate->add_option("--temperature", generate_args.temperature, "Sampling temperature; 0 is greedy")->capture_default_str()->check(CLI::NonNegativeNumber);
  generate->add_option("--top-k", generate_args.top_k, "Sample from the k most likely tokens; 0 is off")->capture_default_str()->check(CLI::NonNegativeNumber);
  generate->add_option("--top-p", generate_args.top_p, "Sample from the smallest set whose probability reaches p")->capture_default_str()->check(CLI::Range(0.0f, 1.0f));
  generate->add_option("--repeat-penalty", generate_args.repeat_penalty, "Penalty for tokens already in the sequence (transformers' repetition_penalty)")->capture_default_str()->check(CLI::PositiveNumber);
  generate->add_option("--seed", generate_args.seed, "Random seed for sampling")->capture_default_str();
  generate->add_option("--max-memory", generate_args.max_memory, "Memory budget for everything the engine holds, e.g. 4GiB, 300MiB (default: 80% of available memory)");
  generate->add_option("--threads", generate_args.threads, "Compute threads (default: all cores)")->check(CLI::NonNegativeNumber);
  generate->add_flag("--output-ids", generate_args.output_ids, "Print generated token ids, space separated, one line per prompt");
  generate->add_flag("--ignore-eos", generate_args.ignore_eos, "Do not stop at the end-of-sequence token");
  generate->add_flag("--no-prefetch", generate_args.no_prefetch, "Read each layer only when needed (a baseline for measurements)");
  generate->add_flag("--quiet", generate_args.quiet, "No statistics on stderr");

  std::string info_model, info_memory;
  int info_context = 0, info_batch = 1;
  auto* info = app.add_subcommand("info", "Show a model's architecture, unit sizes and the memory plan for a budget");
  info->add_option("--model", info_model, "Hugging Face model directory or layerwise split directory")->required();
  info->add_option("--max-memory", info_memory, "Memory budget to plan for, e.g. 2GiB");
  info->add_option("--context", info_context, "Tokens per sequence to plan the KV cache for (default: max positions, at most 2048)")->check(CLI::PositiveNumber);
  info->add_option("--batch", info_batch, "Sequences to plan for")->capture_default_str()->check(CLI::PositiveNumber);

  lw::SplitOptions split_options;
  std::string split_dtype;
  bool verify = false;
  auto* split = app.add_subcommand("split", "Rewrite a checkpoint as one file per layer, for one sequential read each");
  split->add_option("--model", split_options.model, "Source: a Hugging Face model directory");
  split->add_option("--out", split_options.out, "Destination directory")->required();
  split->add_option("--dtype", split_dtype, "Store tensors as f32, f16 or bf16 (default: as in the source)")
      ->check(CLI::IsMember({"f32", "f16", "bf16", "float32", "float16", "bfloat16"}));
  split->add_flag("--verify", verify, "Recheck every file's size and checksum against the manifest (alone: check an existing split)");
  split->add_flag("--quiet", split_options.quiet, "No progress on stderr");

  const std::string first = argc > 1 ? argv[1] : "";
  if (!first.empty() && first[0] != '-' && first != "generate" && first != "info" && first != "split") {
    std::fprintf(stderr, "layerwise: error: unknown command '%s' (commands: generate, info, split; see --help)\n", argv[1]);
    return 2;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }

  try {
    if (generate->parsed()) {
      if (generate_args.prompt_ids.empty() && generate_args.batch_file.empty())
        lw::fail("generate needs --prompt-ids or --batch-file");
      return run_generate(generate_args);
    }
    if (info->parsed()) return run_info(info_model, info_memory, info_context, info_batch);
    if (split->parsed()) {
      if (split_options.model.empty() && !verify) lw::fail("split needs --model (or --verify alone to check --out)");
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
  } catch (const lw::Error& e) {
    std::fprintf(stderr, "layerwise: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "layerwise: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
