#include "runtime/generate.h"

#include <algorithm>

#include "common/error.h"

namespace lw {
namespace {

void check_prompts(const std::vector<std::vector<int>>& prompts) {
  if (prompts.empty()) fail("no prompts given");
  for (const auto& prompt : prompts)
    if (prompt.empty()) fail("a prompt has no tokens");
}

// Feeds every prompt token through the model in sweeps of at most the planned size.
// on_logits(sequence, position, logits row) is called for the positions in `wanted`.
void prefill(Engine& engine, const std::vector<std::vector<int>>& prompts, bool all_positions,
             const std::function<void(int, int, const float*)>& on_logits) {
  const int vocab = engine.config().vocab_size;
  std::vector<Token> pending;
  for (size_t s = 0; s < prompts.size(); s++)
    for (size_t p = 0; p < prompts[s].size(); p++)
      pending.push_back({prompts[s][p], static_cast<int32_t>(s), static_cast<int32_t>(p)});
  const size_t chunk = static_cast<size_t>(engine.active_plan().tokens_per_sweep);
  std::vector<float> logits;
  for (size_t start = 0; start < pending.size(); start += chunk) {
    std::vector<Token> sweep(pending.begin() + static_cast<long>(start),
                             pending.begin() + static_cast<long>(std::min(pending.size(), start + chunk)));
    std::vector<int> rows;
    for (size_t t = 0; t < sweep.size(); t++) {
      const Token& token = sweep[t];
      bool last = token.position + 1 == static_cast<int>(prompts[static_cast<size_t>(token.sequence)].size());
      if (all_positions || last) rows.push_back(static_cast<int>(t));
    }
    logits.resize(rows.size() * static_cast<size_t>(vocab));
    engine.forward(sweep, rows, logits.data());
    for (size_t i = 0; i < rows.size(); i++) {
      const Token& token = sweep[static_cast<size_t>(rows[i])];
      on_logits(token.sequence, token.position, logits.data() + i * vocab);
    }
  }
}

}  // namespace

std::vector<std::vector<int>> generate(Engine& engine, const std::vector<std::vector<int>>& prompts,
                                       const GenerateOptions& options, const TokenCallback& on_token) {
  check_prompts(prompts);
  const ModelConfig& config = engine.config();
  const int vocab = config.vocab_size;
  const int sequences = static_cast<int>(prompts.size());
  size_t longest = 0, total = 0;
  for (const auto& prompt : prompts) {
    longest = std::max(longest, prompt.size());
    total += prompt.size();
  }
  std::vector<std::vector<int>> generated(prompts.size());
  if (options.max_new_tokens <= 0) return generated;
  engine.begin({sequences, static_cast<int>(longest) + options.max_new_tokens, static_cast<int>(total), false});

  std::vector<Sampler> samplers;
  for (int s = 0; s < sequences; s++) {
    SamplingOptions sampling = options.sampling;
    sampling.seed += static_cast<uint64_t>(s);  // independent, reproducible streams per sequence
    samplers.emplace_back(sampling);
  }
  std::vector<std::vector<int>> history = prompts;
  std::vector<bool> finished(prompts.size(), false);
  auto choose = [&](int s, float* logits) {
    int token = samplers[static_cast<size_t>(s)].sample(logits, vocab, history[static_cast<size_t>(s)]);
    history[static_cast<size_t>(s)].push_back(token);
    generated[static_cast<size_t>(s)].push_back(token);
    if (on_token) on_token(s, token);
    const auto& eos = config.eos_token_ids;
    const auto& stops = options.stop_token_ids;
    if ((options.stop_at_eos && std::find(eos.begin(), eos.end(), token) != eos.end()) ||
        std::find(stops.begin(), stops.end(), token) != stops.end() ||
        static_cast<int>(generated[static_cast<size_t>(s)].size()) >= options.max_new_tokens)
      finished[static_cast<size_t>(s)] = true;
  };

  std::vector<float> row(static_cast<size_t>(vocab));
  prefill(engine, prompts, false, [&](int s, int, const float* logits) {
    std::copy(logits, logits + vocab, row.begin());
    choose(s, row.data());
  });
  std::vector<float> logits;
  while (true) {
    std::vector<Token> step;
    std::vector<int> rows, owners;
    for (int s = 0; s < sequences; s++) {
      if (finished[static_cast<size_t>(s)]) continue;
      const auto& h = history[static_cast<size_t>(s)];
      rows.push_back(static_cast<int>(step.size()));
      owners.push_back(s);
      step.push_back({h.back(), s, static_cast<int32_t>(h.size() - 1)});
    }
    if (step.empty()) break;
    logits.resize(step.size() * static_cast<size_t>(vocab));
    try {
      engine.forward(step, rows, logits.data());
    } catch (const Error& error) {
      // Tokens already chosen (and perhaps printed) came from finite logits: say how many.
      const size_t done = generated[static_cast<size_t>(owners[0])].size();
      throw Error(std::string(error.what()) + " (while computing new token " + std::to_string(done + 1) + "; the " +
                  std::to_string(done) + " before it are sound)");
    }
    for (size_t i = 0; i < owners.size(); i++) choose(owners[i], logits.data() + i * vocab);
  }
  engine.end();
  return generated;
}

std::vector<std::vector<float>> prompt_logits(Engine& engine, const std::vector<std::vector<int>>& prompts) {
  check_prompts(prompts);
  const int vocab = engine.config().vocab_size;
  size_t longest = 0, total = 0;
  for (const auto& prompt : prompts) {
    longest = std::max(longest, prompt.size());
    total += prompt.size();
  }
  engine.begin({static_cast<int>(prompts.size()), static_cast<int>(longest), static_cast<int>(total), true});
  std::vector<std::vector<float>> result(prompts.size());
  for (size_t s = 0; s < prompts.size(); s++) result[s].resize(prompts[s].size() * static_cast<size_t>(vocab));
  prefill(engine, prompts, true, [&](int s, int position, const float* logits) {
    std::copy(logits, logits + vocab, result[static_cast<size_t>(s)].begin() + static_cast<long>(position) * vocab);
  });
  engine.end();
  return result;
}

}  // namespace lw
