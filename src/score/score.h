// Scoring: how likely a model finds given continuations, without generating.
//
// score_rows: for each row (a prefix and several choices), the log-likelihood of every choice
// given the prefix — the quantities lm-evaluation-harness's `loglikelihood` returns. The prefix
// is computed once per row and every choice attends to that one copy of its keys and values
// (SequenceSpan parents), exactly as if prefix + choice had run alone. As many rows as the
// memory budget allows pass each layer sweep together, so a batch of rows costs one read of the
// model, not one per row.
//
// perplexity: sliding windows over one long token sequence, as transformers' perplexity guide
// computes it, or llama-perplexity's chunks; several windows per sweep.
#pragma once
#include <cstddef>
#include <functional>
#include <vector>

#include "runtime/engine.h"

namespace lw {

struct ScoreRow {
  std::vector<int> prefix;                // at least one token
  std::vector<std::vector<int>> choices;  // at least one, each at least one token
};

struct ChoiceScore {
  double sum_logprob = 0;  // sum over the choice's tokens of log p(token | everything before it)
  int tokens = 0;
  bool greedy = true;  // every choice token was the most likely token (the first one on ties)
  double mean_logprob() const { return tokens ? sum_logprob / tokens : 0; }
};

struct RowScore {
  std::vector<ChoiceScore> choices;
  int best_by_sum = 0, best_by_mean = 0;  // first index on ties
};

struct ScoreOptions {
  // false: every prefix + choice is a sequence of its own (no sharing); a baseline.
  bool share_prefix = true;
  // At most this many rows (with sharing off: prefix + choice sequences) per batch; 0: as many
  // as the budget allows.
  int max_rows_per_batch = 0;
  // Called in input order as rows finish (index, score).
  std::function<void(size_t, const RowScore&)> on_row;
  // Called with the logits (vocab floats) that predict token `token` of choice `choice` of row
  // `row`, as they are computed (rows interleave).
  std::function<void(size_t row, int choice, int token, const float* logits, int vocab)> on_logits;
};

struct ScoreStats {
  int batches = 0;
  size_t tokens = 0;       // tokens computed (shared prefixes once)
  int tokens_per_batch = 0;  // the batch size the plan allowed
};

// Throws lw::Error for an empty prefix or choice and tokens outside the vocabulary (naming the
// row, counted from 0).
std::vector<RowScore> score_rows(Engine& engine, const std::vector<ScoreRow>& rows, const ScoreOptions& options,
                                 ScoreStats* stats = nullptr);

struct PerplexityResult {
  double nll_sum = 0;      // negative log-likelihood of the scored tokens, summed
  size_t tokens_scored = 0;
  int windows = 0;
  double perplexity() const;
};

// Which windows of a text run and which of their positions are scored: each window is one row
// (its unscored head as the prefix, its scored tail as the one choice).
struct PerplexityPlan {
  std::vector<ScoreRow> windows;
  std::vector<size_t> first_scored;  // per window: the text position its choice starts at
  // The text positions scored (each predicted by the logits of the position before), ascending.
  std::vector<size_t> positions() const;
};

// transformers' sliding-window perplexity: windows of at most `context` tokens starting every
// `stride` tokens; each window scores only the tokens the previous window did not reach (its
// first token never: it has no prediction), so every position 1 .. tokens.size() - 1 once.
// stride <= context.
PerplexityPlan sliding_windows(const std::vector<int>& tokens, int context, int stride);

// llama-perplexity's chunks: tokens.size() / context chunks of `context` tokens back to back (the
// rest of the text unused), each run alone with its first token replaced by `bos` when bos >= 0
// (llama.cpp does so for a model whose tokenizer adds BOS), each scoring its positions
// context / 2 + 1 .. context - 1: context - 1 - context / 2 tokens a chunk.
PerplexityPlan llama_chunks(const std::vector<int>& tokens, int context, int bos);

// on_logits, when set, gets the logits (vocab floats) that predict tokens[position], for every
// position of plan.positions() exactly once, in no particular order.
PerplexityResult perplexity(Engine& engine, const PerplexityPlan& plan,
                            const std::function<void(int windows_done, int windows)>& on_progress = {},
                            const std::function<void(size_t position, const float* logits, int vocab)>& on_logits = {});

}  // namespace lw
