// Generation and prompt evaluation over the engine: all prompts of a batch pass each layer
// together (prefill in chunks the plan allows), then every unfinished sequence advances one token
// per sweep.
#pragma once
#include <functional>
#include <vector>

#include "runtime/engine.h"
#include "sample/sampler.h"

namespace lw {

struct GenerateOptions {
  int max_new_tokens = 64;
  SamplingOptions sampling;
  bool stop_at_eos = true;
  std::vector<int> stop_token_ids;  // also end a sequence (e.g. a chat template's end of turn)
};

// Called as each token is chosen (sequence index, token id).
using TokenCallback = std::function<void(int, int)>;

// Returns the generated ids of each prompt (EOS included when it was generated).
std::vector<std::vector<int>> generate(Engine& engine, const std::vector<std::vector<int>>& prompts,
                                       const GenerateOptions& options, const TokenCallback& on_token = {});

// Logits of every position of every prompt ([length * vocab] per prompt), in batched sweeps.
std::vector<std::vector<float>> prompt_logits(Engine& engine, const std::vector<std::vector<int>>& prompts);

}  // namespace lw
