// Picks the next token from logits: greedy, or sampling with the transformers order of
// processors: repetition penalty, temperature, top-k, top-p.
#pragma once
#include <cstdint>
#include <random>
#include <vector>

namespace lw {

struct SamplingOptions {
  float temperature = 0;   // 0: greedy
  int top_k = 0;           // 0: off
  float top_p = 1;         // 1: off
  float repeat_penalty = 1;  // 1: off; > 1 discourages tokens already in the sequence
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(const SamplingOptions& options);
  // `history`: the sequence so far (prompt and generated), for the repetition penalty.
  int sample(float* logits, int vocab, const std::vector<int>& history);

 private:
  SamplingOptions options_;
  std::mt19937_64 random_;
};

}  // namespace lw
