#include "sample/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "common/error.h"

namespace lw {

Sampler::Sampler(const SamplingOptions& options) : options_(options), random_(options.seed) {
  // Written so that NaN fails every check (it compares false with everything).
  if (!(options.temperature >= 0 && std::isfinite(options.temperature)))
    fail("sampling temperature must be a finite number of 0 or more (got " + std::to_string(options.temperature) + ")");
  if (!(options.top_p >= 0 && options.top_p <= 1)) fail("top_p must be from 0 to 1 (got " + std::to_string(options.top_p) + ")");
  if (!(options.repeat_penalty > 0 && std::isfinite(options.repeat_penalty)))
    fail("repeat penalty must be a positive finite number (got " + std::to_string(options.repeat_penalty) + ")");
  if (options.top_k < 0) fail("top_k must be 0 or more (got " + std::to_string(options.top_k) + ")");
}

int Sampler::sample(float* logits, int vocab, const std::vector<int>& history) {
  if (options_.repeat_penalty != 1) {
    // As transformers' RepetitionPenaltyLogitsProcessor: each distinct earlier token once.
    std::vector<bool> seen(static_cast<size_t>(vocab), false);
    for (int token : history) {
      if (token < 0 || token >= vocab || seen[static_cast<size_t>(token)]) continue;
      seen[static_cast<size_t>(token)] = true;
      float& logit = logits[token];
      logit = logit > 0 ? logit / options_.repeat_penalty : logit * options_.repeat_penalty;
    }
  }
  if (options_.temperature <= 0) return static_cast<int>(std::max_element(logits, logits + vocab) - logits);

  std::vector<int> order(static_cast<size_t>(vocab));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return logits[a] > logits[b]; });
  size_t keep = order.size();
  if (options_.top_k > 0) keep = std::min(keep, static_cast<size_t>(options_.top_k));
  std::vector<double> probabilities(keep);
  const double top = logits[order[0]] / options_.temperature;
  double total = 0;
  for (size_t i = 0; i < keep; i++) total += probabilities[i] = std::exp(logits[order[i]] / options_.temperature - top);
  if (options_.top_p < 1) {
    // Smallest prefix whose probability reaches top_p (always at least one token).
    double cumulative = 0;
    size_t cut = 0;
    while (cut < keep) {
      cumulative += probabilities[cut++] / total;
      if (cumulative >= options_.top_p) break;
    }
    keep = cut;
    total = std::accumulate(probabilities.begin(), probabilities.begin() + static_cast<long>(keep), 0.0);
  }
  double pick = std::uniform_real_distribution<double>(0, total)(random_);
  for (size_t i = 0; i < keep; i++) {
    pick -= probabilities[i];
    if (pick <= 0) return order[i];
  }
  return order[keep - 1];
}

}  // namespace lw
