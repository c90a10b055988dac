// `layerwise bench`: prefill and decode speed measured the way llama.cpp's llama-bench measures
// them (random token ids, one sequence, a warm-up pass first, mean and deviation over repeats), so
// the two can be compared on the same file; plus the bytes and arithmetic each implies.
#include <cmath>
#include <cstdio>
#include <random>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "common/error.h"
#include "common/progress.h"
#include "common/sizes.h"
#include "common/system.h"

namespace lw::cli {
namespace {

struct Measurement {
  std::string test;  // "pp512", "tg64"
  int tokens = 0;
  std::vector<double> seconds;  // one per repeat

  double mean_rate() const {
    double sum = 0;
    for (double s : seconds) sum += tokens / s;
    return sum / static_cast<double>(seconds.size());
  }
  double rate_deviation() const {
    if (seconds.size() < 2) return 0;
    const double mean = mean_rate();
    double squares = 0;
    for (double s : seconds) squares += (tokens / s - mean) * (tokens / s - mean);
    return std::sqrt(squares / static_cast<double>(seconds.size() - 1));
  }
};

// Multiply-adds of one token through the layers' matrices and through the LM head, 2 FLOPs each.
double layer_flops_per_token(const ModelConfig& c) {
  const double h = c.hidden_size;
  return 2.0 * c.num_layers * (h * (c.q_dim() + 2.0 * c.kv_dim()) + c.q_dim() * h + 3.0 * h * c.intermediate_size);
}
double head_flops(const ModelConfig& c) { return 2.0 * c.hidden_size * c.vocab_size; }

// Attention of tokens at positions 0..n-1 (token p sees p + 1 positions): q.k and p.v for each.
double attention_flops(const ModelConfig& c, int tokens) {
  const double visible = static_cast<double>(tokens) * (tokens + 1) / 2.0;
  return 4.0 * c.num_layers * static_cast<double>(c.q_dim()) * visible;
}

}  // namespace

int run_bench(const BenchArgs& args) {
  Engine engine(args.run.model, engine_options(args.run));
  const ModelConfig& config = engine.config();
  const int context = std::max(args.prompt_tokens, args.decode_tokens);
  if (context < 1) usage_fail("nothing to measure: --prompt and --decode are both 0");
  check_context(config, context, args.run.allow_long_context,
                "--prompt " + std::to_string(args.prompt_tokens) + " and --decode " + std::to_string(args.decode_tokens));
  RunShape shape;
  shape.sequences = 1;
  shape.context_tokens = context;
  shape.prompt_tokens = std::max(args.prompt_tokens, 1);
  engine.begin(shape);

  std::mt19937 random(args.seed);
  std::uniform_int_distribution<int32_t> id(std::min(3, config.vocab_size - 1), config.vocab_size - 1);
  std::vector<float> logits(static_cast<size_t>(config.vocab_size));
  const bool progress = !args.run.quiet && isatty(STDERR_FILENO);

  // One prefill of n tokens from an empty cache (logits of the last), or n decode steps of one token.
  auto prefill = [&](int n) {
    engine.set_sequences({SequenceSpan{0, context, -1}});
    std::vector<Token> tokens;
    for (int p = 0; p < n; p++) tokens.push_back({id(random), 0, p});
    const double start = now_seconds();
    engine.forward(tokens, {n - 1}, logits.data());
    return now_seconds() - start;
  };
  auto decode = [&](int n) {
    engine.set_sequences({SequenceSpan{0, context, -1}});
    const double start = now_seconds();
    for (int p = 0; p < n; p++) engine.forward({{id(random), 0, p}}, {0}, logits.data());
    return now_seconds() - start;
  };

  // The warm-up pass reads every layer (and, when the model fits, keeps it): not counted, as
  // llama-bench does not count its own.
  if (progress) std::fprintf(stderr, "bench: warm-up pass (reads the weights)\r");
  const double warm_up_seconds = args.prompt_tokens > 0 ? prefill(args.prompt_tokens) : decode(1);
  std::vector<Measurement> results;
  if (args.prompt_tokens > 0) results.push_back({"pp" + std::to_string(args.prompt_tokens), args.prompt_tokens, {}});
  if (args.decode_tokens > 0) results.push_back({"tg" + std::to_string(args.decode_tokens), args.decode_tokens, {}});
  for (int r = 0; r < args.repeat; r++)
    for (auto& m : results) {
      if (progress) std::fprintf(stderr, "bench: %s, repeat %d of %d          \r", m.test.c_str(), r + 1, args.repeat);
      m.seconds.push_back(m.test[0] == 'p' ? prefill(m.tokens) : decode(m.tokens));
    }
  if (progress) std::fprintf(stderr, "%60s\r", "");

  // Every unit but the embedding table (looked up one row per token) is read for each token.
  const auto& units = engine.checkpoint().units;
  uint64_t weight_bytes_per_token = 0;
  for (size_t u = 1; u < units.size(); u++) weight_bytes_per_token += units[u].loaded_bytes();

  nlohmann::ordered_json report;
  report["model"] = args.run.model;
  report["threads"] = engine.threads();
  report["compute"] = compute_description(engine);
  report["weight_bytes_per_token"] = weight_bytes_per_token;
  report["warm_up_seconds"] = warm_up_seconds;
  report["tests"] = nlohmann::ordered_json::array();
  for (const auto& m : results) {
    const bool prompt = m.test[0] == 'p';
    // Token p of either test sees positions 0..p, so both count the same attention; a prefill
    // computes logits for its last token only.
    const double flops = layer_flops_per_token(config) * m.tokens + head_flops(config) * (prompt ? 1 : m.tokens) +
                         attention_flops(config, m.tokens);
    double mean_seconds = 0;
    for (double s : m.seconds) mean_seconds += s / static_cast<double>(m.seconds.size());
    nlohmann::ordered_json test = {{"test", m.test},
                                   {"tokens", m.tokens},
                                   {"tokens_per_second", m.mean_rate()},
                                   {"tokens_per_second_stddev", m.rate_deviation()},
                                   {"seconds", m.seconds},
                                   {"flops_per_second", flops / mean_seconds}};
    if (!prompt) test["weight_bytes_per_second"] = static_cast<double>(weight_bytes_per_token) * m.mean_rate();
    report["tests"].push_back(test);
  }
  if (args.json) {
    std::printf("%s\n", report.dump().c_str());
  } else {
    std::printf("%-8s %12s %10s %16s\n", "test", "tokens/s", "+-", "achieved");
    for (const auto& test : report["tests"]) {
      const std::string name = test["test"];
      char achieved[32];
      if (name[0] == 'p') std::snprintf(achieved, sizeof achieved, "%.3f TFLOP/s", test["flops_per_second"].get<double>() / 1e12);
      else std::snprintf(achieved, sizeof achieved, "%.2f GB/s", test["weight_bytes_per_second"].get<double>() / 1e9);
      std::printf("%-8s %12.2f %10.2f %16s\n", name.c_str(), test["tokens_per_second"].get<double>(),
                  test["tokens_per_second_stddev"].get<double>(), achieved);
    }
  }
  if (!args.run.quiet) {
    std::fprintf(stderr, "warm-up   %s (first pass, reading the weights)\n", seconds_text(warm_up_seconds).c_str());
    std::fprintf(stderr, "weights   %s read per token\n", format_size(weight_bytes_per_token).c_str());
    print_memory_stats(engine);
    std::fprintf(stderr, "compute   %s\n", compute_description(engine).c_str());
  }
  engine.end();
  return 0;
}

}  // namespace lw::cli
