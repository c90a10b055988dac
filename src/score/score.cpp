#include "score/score.h"

#include <algorithm>
#include <cmath>

#include "common/error.h"

namespace lw {
namespace {

// Logits rows are consumed in chunks of this many (about 16 MiB for a 32K vocabulary).
constexpr int kLogitChunk = 128;

size_t row_tokens(const ScoreRow& row) {
  size_t total = row.prefix.size();
  for (const auto& choice : row.choices) total += choice.size();
  return total;
}

// Where a logit row's prediction goes: token `token` of choice `choice` of row `row`.
struct Target {
  size_t row;
  int choice, token;
  int id;
};

// One row of logits as a distribution: the most likely token (the first on ties, as argmax)
// and log of the softmax denominator.
struct Distribution {
  int best = 0;
  double log_normalizer = 0;
  double log_probability(const float* logits, int id) const { return static_cast<double>(logits[id]) - log_normalizer; }
};

Distribution distribution(const float* logits, int vocab) {
  Distribution d;
  for (int i = 1; i < vocab; i++)
    if (logits[i] > logits[d.best]) d.best = i;
  const float top = logits[d.best];
  double total = 0;
#pragma omp simd reduction(+ : total)
  for (int i = 0; i < vocab; i++) total += static_cast<double>(std::exp(logits[i] - top));
  d.log_normalizer = static_cast<double>(top) + std::log(total);
  return d;
}

// The largest batch (in tokens) whose KV cache and activations the budget holds while it passes
// each layer in one sweep, and the plan's shape for it. A bigger batch needs a bigger cache,
// which leaves less for activations: the largest size that still fits is found by bisection. A
// row larger than any batch that fits gets a batch of its own, cut into several sweeps.
RunShape plan_batches(const Engine& engine, size_t total_tokens, size_t largest_row) {
  const auto shape_for = [&](size_t tokens) {
    const int positions = static_cast<int>(std::max(tokens, largest_row));
    return RunShape{1, positions, static_cast<int>(tokens), true, positions, kLogitChunk};
  };
  const auto fits = [&](size_t tokens) {
    try {
      return static_cast<size_t>(engine.plan(shape_for(tokens)).tokens_per_sweep) >= tokens;
    } catch (const Error&) {
      return false;
    }
  };
  size_t low = largest_row, high = std::max(largest_row, std::min<size_t>(total_tokens, size_t{1} << 20));
  if (!fits(low)) {
    engine.plan(shape_for(low));  // throws when even one row's cache does not fit, saying why
    return shape_for(low);        // it fits in several sweeps
  }
  while (low < high) {
    const size_t middle = low + (high - low + 1) / 2;
    if (fits(middle)) low = middle;
    else high = middle - 1;
  }
  return shape_for(low);
}

}  // namespace

std::vector<RowScore> score_rows(Engine& engine, const std::vector<ScoreRow>& input, const ScoreOptions& options,
                                 ScoreStats* stats) {
  const int vocab = engine.config().vocab_size;
  if (stats) *stats = ScoreStats{};
  for (size_t r = 0; r < input.size(); r++) {
    const ScoreRow& row = input[r];
    const std::string where = "row " + std::to_string(r) + ": ";
    if (row.prefix.empty()) fail(where + "the prefix has no tokens (each choice needs a token before it)");
    if (row.choices.empty()) fail(where + "no choices");
    for (const auto& choice : row.choices)
      if (choice.empty()) fail(where + "a choice has no tokens");
    auto check = [&](const std::vector<int>& ids) {
      for (int id : ids)
        if (id < 0 || id >= vocab)
          fail(where + "token id " + std::to_string(id) + " is outside the vocabulary (0.." + std::to_string(vocab - 1) + ")");
    };
    check(row.prefix);
    for (const auto& choice : row.choices) check(choice);
  }
  std::vector<RowScore> results(input.size());
  if (input.empty()) return results;

  // Without sharing, every prefix + choice is a row of its own with one choice.
  std::vector<ScoreRow> split_rows;
  std::vector<std::pair<size_t, int>> origin;  // for split rows: (input row, choice)
  if (!options.share_prefix) {
    for (size_t r = 0; r < input.size(); r++)
      for (size_t c = 0; c < input[r].choices.size(); c++) {
        split_rows.push_back({input[r].prefix, {input[r].choices[c]}});
        origin.push_back({r, static_cast<int>(c)});
      }
  }
  const std::vector<ScoreRow>& rows = options.share_prefix ? input : split_rows;
  for (size_t r = 0; r < input.size(); r++) results[r].choices.assign(input[r].choices.size(), ChoiceScore{});

  size_t total = 0, largest = 0;
  for (const auto& row : rows) total += row_tokens(row), largest = std::max(largest, row_tokens(row));
  const RunShape shape = plan_batches(engine, total, largest);
  engine.begin(shape);
  const size_t batch_tokens = static_cast<size_t>(shape.prompt_tokens);
  const size_t per_sweep = static_cast<size_t>(engine.active_plan().tokens_per_sweep);
  if (stats) stats->tokens_per_batch = static_cast<int>(batch_tokens);

  // Input rows are finished (and reported) in order; with sharing off, one input row spans
  // several rows here.
  std::vector<int> choices_left(input.size());
  for (size_t r = 0; r < input.size(); r++) choices_left[r] = static_cast<int>(input[r].choices.size());
  size_t next_to_report = 0;
  auto finish_row = [&](size_t r) {
    RowScore& score = results[r];
    for (size_t c = 1; c < score.choices.size(); c++) {
      if (score.choices[c].sum_logprob > score.choices[static_cast<size_t>(score.best_by_sum)].sum_logprob)
        score.best_by_sum = static_cast<int>(c);
      if (score.choices[c].mean_logprob() > score.choices[static_cast<size_t>(score.best_by_mean)].mean_logprob())
        score.best_by_mean = static_cast<int>(c);
    }
  };

  for (size_t first = 0; first < rows.size();) {
    // Rows in input order while they fit the batch (always at least one).
    size_t last = first, tokens = 0;
    while (last < rows.size() && (last == first || tokens + row_tokens(rows[last]) <= batch_tokens) &&
           (options.max_rows_per_batch <= 0 || last - first < static_cast<size_t>(options.max_rows_per_batch)))
      tokens += row_tokens(rows[last++]);

    // Layout: each row's prefix, then its choices continuing it.
    std::vector<SequenceSpan> spans;
    std::vector<Token> prefix_tokens, choice_tokens;
    std::vector<std::vector<Target>> prefix_targets, choice_targets;  // parallel to the tokens
    for (size_t r = first; r < last; r++) {
      const ScoreRow& row = rows[r];
      const int prefix_length = static_cast<int>(row.prefix.size());
      const int parent = static_cast<int>(spans.size());
      spans.push_back({0, prefix_length, -1});
      for (int p = 0; p < prefix_length; p++) {
        prefix_tokens.push_back({row.prefix[static_cast<size_t>(p)], parent, p});
        prefix_targets.emplace_back();
      }
      for (size_t c = 0; c < row.choices.size(); c++) {
        const auto& choice = row.choices[c];
        const int sequence = static_cast<int>(spans.size());
        spans.push_back({prefix_length, static_cast<int>(choice.size()), parent});
        // The prefix's last position predicts every choice's first token.
        prefix_targets.back().push_back({r, static_cast<int>(c), 0, choice[0]});
        for (size_t j = 0; j < choice.size(); j++) {
          choice_tokens.push_back({choice[j], sequence, prefix_length + static_cast<int>(j)});
          choice_targets.emplace_back();
          if (j + 1 < choice.size()) choice_targets.back().push_back({r, static_cast<int>(c), static_cast<int>(j + 1), choice[j + 1]});
        }
      }
    }
    engine.set_sequences(spans);
    // Prefixes before choices: a choice token never comes in a sweep before its prefix.
    std::vector<Token> all = std::move(prefix_tokens);
    all.insert(all.end(), choice_tokens.begin(), choice_tokens.end());
    std::vector<std::vector<Target>> targets = std::move(prefix_targets);
    for (auto& t : choice_targets) targets.push_back(std::move(t));

    for (size_t start = 0; start < all.size(); start += per_sweep) {
      const size_t end = std::min(all.size(), start + per_sweep);
      const std::vector<Token> sweep(all.begin() + static_cast<long>(start), all.begin() + static_cast<long>(end));
      std::vector<int> logit_rows;
      std::vector<const std::vector<Target>*> row_targets;
      for (size_t t = start; t < end; t++)
        if (!targets[t].empty()) {
          logit_rows.push_back(static_cast<int>(t - start));
          row_targets.push_back(&targets[t]);
        }
      engine.forward(sweep, logit_rows, [&](size_t chunk_first, size_t count, const float* logits) {
        for (size_t i = 0; i < count; i++) {
          const float* row_logits = logits + i * static_cast<size_t>(vocab);
          const Distribution d = distribution(row_logits, vocab);
          for (const Target& target : *row_targets[chunk_first + i]) {
            if (options.on_logits)
              options.on_logits(options.share_prefix ? target.row : origin[target.row].first,
                                options.share_prefix ? target.choice : origin[target.row].second, target.token, row_logits, vocab);
            const double logprob = d.log_probability(row_logits, target.id);
            const bool greedy = d.best == target.id;
            const size_t r = options.share_prefix ? target.row : origin[target.row].first;
            const int c = options.share_prefix ? target.choice : origin[target.row].second;
            ChoiceScore& score = results[r].choices[static_cast<size_t>(c)];
            score.sum_logprob += logprob;
            score.tokens++;
            score.greedy = score.greedy && greedy;
          }
        }
      });
      if (stats) stats->tokens += end - start;
    }
    if (stats) stats->batches++;
    for (size_t r = first; r < last; r++) {
      const size_t input_row = options.share_prefix ? r : origin[r].first;
      if (options.share_prefix) choices_left[input_row] = 0;
      else choices_left[input_row]--;
    }
    while (next_to_report < input.size() && choices_left[next_to_report] == 0) {
      finish_row(next_to_report);
      if (options.on_row) options.on_row(next_to_report, results[next_to_report]);
      next_to_report++;
    }
    first = last;
  }
  engine.end();
  return results;
}

double PerplexityResult::perplexity() const { return tokens_scored ? std::exp(nll_sum / static_cast<double>(tokens_scored)) : 0; }

std::vector<size_t> PerplexityPlan::positions() const {
  std::vector<size_t> out;
  for (size_t w = 0; w < windows.size(); w++)
    for (size_t j = 0; j < windows[w].choices[0].size(); j++) out.push_back(first_scored[w] + j);
  std::sort(out.begin(), out.end());
  return out;
}

PerplexityPlan sliding_windows(const std::vector<int>& tokens, int context, int stride) {
  if (context < 2) fail("--context must be at least 2 tokens");
  if (stride < 1 || stride > context) fail("--stride must be between 1 and --context");
  if (tokens.size() < 2) fail("the text has fewer than 2 tokens: nothing to score");
  // Windows as the transformers guide makes them; window w scores its last trg_len tokens,
  // except its first token (nothing predicts it).
  PerplexityPlan plan;
  size_t previous_end = 0;
  for (size_t begin = 0; begin < tokens.size(); begin += static_cast<size_t>(stride)) {
    const size_t end = std::min(begin + static_cast<size_t>(context), tokens.size());
    const size_t target_length = end - previous_end;
    const size_t split = std::max<size_t>(1, end - begin - target_length);
    if (split < end - begin) {
      plan.first_scored.push_back(begin + split);
      plan.windows.push_back({std::vector<int>(tokens.begin() + static_cast<long>(begin), tokens.begin() + static_cast<long>(begin + split)),
                              {std::vector<int>(tokens.begin() + static_cast<long>(begin + split), tokens.begin() + static_cast<long>(end))}});
    }
    previous_end = end;
    if (end == tokens.size()) break;
  }
  return plan;
}

PerplexityPlan llama_chunks(const std::vector<int>& tokens, int context, int bos) {
  // Fewer than 3 tokens leave a chunk nothing after its half to score.
  if (context < 3) fail("--context must be at least 3 tokens with --chunks");
  const size_t length = static_cast<size_t>(context);
  if (tokens.size() < length)
    fail("the text has " + std::to_string(tokens.size()) + " tokens, fewer than one chunk of --context " + std::to_string(context));
  // The prefix runs up to the position whose logits predict the first scored token.
  const size_t split = length / 2 + 1;
  PerplexityPlan plan;
  for (size_t begin = 0; begin + length <= tokens.size(); begin += length) {
    std::vector<int> prefix(tokens.begin() + static_cast<long>(begin), tokens.begin() + static_cast<long>(begin + split));
    if (bos >= 0) prefix[0] = bos;
    plan.first_scored.push_back(begin + split);
    plan.windows.push_back({std::move(prefix),
                            {std::vector<int>(tokens.begin() + static_cast<long>(begin + split), tokens.begin() + static_cast<long>(begin + length))}});
  }
  return plan;
}

PerplexityResult perplexity(Engine& engine, const PerplexityPlan& plan, const std::function<void(int, int)>& on_progress,
                            const std::function<void(size_t, const float*, int)>& on_logits) {
  PerplexityResult result;
  result.windows = static_cast<int>(plan.windows.size());
  ScoreOptions options;
  int done = 0;
  options.on_row = [&](size_t, const RowScore& score) {
    result.nll_sum -= score.choices[0].sum_logprob;
    result.tokens_scored += static_cast<size_t>(score.choices[0].tokens);
    if (on_progress) on_progress(++done, result.windows);
  };
  if (on_logits)
    options.on_logits = [&](size_t row, int, int token, const float* logits, int vocab) {
      on_logits(plan.first_scored[row] + static_cast<size_t>(token), logits, vocab);
    };
  score_rows(engine, plan.windows, options);
  return result;
}

}  // namespace lw
