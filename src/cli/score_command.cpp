// `layerwise score` (log-likelihoods of choices after a prefix, rows read from JSON lines) and
// `layerwise perplexity` (sliding windows or llama-perplexity's chunks over a text file).
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/text.h"
#include "common/error.h"
#include "common/file.h"
#include "common/progress.h"
#include "common/sizes.h"
#include "common/system.h"
#include "score/divergence.h"
#include "score/score.h"

namespace lw::cli {
namespace {

// One input line: a row to score, or why it cannot be.
struct InputLine {
  int number = 0;
  nlohmann::json id;
  std::optional<ScoreRow> row;
  std::string error;
};

std::vector<int> ids_from_json(const nlohmann::json& value, const std::string& field) {
  if (!value.is_array()) throw std::runtime_error("\"" + field + "\" is not an array of token ids");
  std::vector<int> ids;
  for (const auto& id : value) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX)
      throw std::runtime_error("\"" + field + "\" holds " + id.dump() + ", which is not a token id");
    ids.push_back(id.get<int>());
  }
  return ids;
}

// Reads the rows. Text is tokenized as lm-evaluation-harness does for loglikelihood: spaces at
// the end of the prefix move to the start of each choice, the prefix is encoded as a prompt (BOS
// as the tokenizer adds it), and a choice's ids are those that follow the prefix's ids in the
// encoding of prefix + choice. That gives each choice the ids it has in running text (encoding
// " play" alone would give SentencePiece vocabularies a stray "▁"). A text choice after
// prefix_ids is encoded alone, without special tokens.
std::vector<InputLine> read_rows(const std::string& path, const std::string& model, std::optional<Tokenizer>& tokenizer) {
  std::ifstream file(path);
  if (!file) fail(path, "cannot open");
  std::vector<InputLine> lines;
  std::string text;
  int number = 0;
  auto text_of = [](const nlohmann::json& value, const std::string& field) {
    if (!value.is_string()) throw std::runtime_error("\"" + field + "\" is not a string");
    return value.get<std::string>();
  };
  auto encode = [&](const std::string& value, bool special) {
    if (!tokenizer) tokenizer = load_tokenizer(model);
    const auto ids = tokenizer->encode(value, special, false);
    return std::vector<int>(ids.begin(), ids.end());
  };
  while (std::getline(file, text)) {
    number++;
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
    InputLine line;
    line.number = number;
    try {
      const nlohmann::json json = nlohmann::json::parse(text);
      if (!json.is_object()) throw std::runtime_error("not a JSON object");
      line.id = json.contains("id") ? json["id"] : nlohmann::json(number);
      ScoreRow row;
      std::optional<std::string> prefix_text;
      if (json.contains("prefix_ids")) {
        row.prefix = ids_from_json(json["prefix_ids"], "prefix_ids");
      } else if (json.contains("prefix")) {
        prefix_text = text_of(json["prefix"], "prefix");
      } else {
        throw std::runtime_error("no \"prefix\" or \"prefix_ids\"");
      }
      if (json.contains("choices_ids")) {
        if (!json["choices_ids"].is_array()) throw std::runtime_error("\"choices_ids\" is not an array");
        for (const auto& choice : json["choices_ids"]) row.choices.push_back(ids_from_json(choice, "choices_ids"));
        if (prefix_text) row.prefix = encode(*prefix_text, true);
      } else if (json.contains("choices")) {
        if (!json["choices"].is_array()) throw std::runtime_error("\"choices\" is not an array of strings");
        std::string spaces;
        if (prefix_text) {
          const size_t end = prefix_text->find_last_not_of(" ") + 1;  // npos + 1 == 0: all spaces
          spaces = prefix_text->substr(end);
          prefix_text->resize(end);
          row.prefix = encode(*prefix_text, true);
        }
        for (const auto& choice : json["choices"]) {
          const std::string choice_text = spaces + text_of(choice, "choices");
          if (!prefix_text) {
            row.choices.push_back(encode(choice_text, false));
            continue;
          }
          const std::vector<int> whole = encode(*prefix_text + choice_text, true);
          row.choices.emplace_back(whole.begin() + static_cast<long>(std::min(row.prefix.size(), whole.size())), whole.end());
        }
      } else {
        throw std::runtime_error("no \"choices\" or \"choices_ids\"");
      }
      if (row.prefix.empty()) throw std::runtime_error("the prefix encodes to no tokens");
      if (row.choices.empty()) throw std::runtime_error("no choices");
      for (const auto& choice : row.choices)
        if (choice.empty()) throw std::runtime_error("a choice encodes to no tokens");
      line.row = std::move(row);
    } catch (const lw::Error&) {
      throw;  // the model or its tokenizer, not this line
    } catch (const std::exception& e) {
      line.error = e.what();
      if (auto at = line.error.find("[json.exception."); at != std::string::npos) line.error = "malformed JSON: " + line.error;
    }
    lines.push_back(std::move(line));
  }
  if (lines.empty()) fail(path, "holds no rows (one JSON object per line)");
  return lines;
}

nlohmann::ordered_json row_json(const InputLine& line, const RowScore& score) {
  nlohmann::ordered_json choices = nlohmann::ordered_json::array();
  for (const auto& choice : score.choices)
    choices.push_back({{"sum_logprob", choice.sum_logprob},
                       {"tokens", choice.tokens},
                       {"mean_logprob", choice.mean_logprob()},
                       {"greedy", choice.greedy}});
  return {{"id", line.id}, {"choices", choices}, {"best_by_sum", score.best_by_sum}, {"best_by_mean", score.best_by_mean}};
}

// The temporary output file, removed if SIGINT, SIGTERM or SIGHUP ends the run (SIGKILL cannot be
// caught).
char interrupted_output[PATH_MAX];

void remove_output_and_die(int signal) {
  unlink(interrupted_output);  // async-signal-safe
  std::signal(signal, SIG_DFL);
  std::raise(signal);
}

// While it lives, SIGINT, SIGTERM and SIGHUP remove `temp` before they end the run. Made before
// the file is created: a signal between the two would leave it behind.
class RemovedOnSignal {
 public:
  explicit RemovedOnSignal(const std::string& temp) {
    if (temp.size() >= sizeof interrupted_output) fail(temp, "path too long");
    std::memcpy(interrupted_output, temp.c_str(), temp.size() + 1);
    for (int signal : {SIGINT, SIGTERM, SIGHUP}) std::signal(signal, remove_output_and_die);
  }
  ~RemovedOnSignal() { release(); }
  RemovedOnSignal(const RemovedOnSignal&) = delete;
  RemovedOnSignal& operator=(const RemovedOnSignal&) = delete;
  void release() {
    for (int signal : {SIGINT, SIGTERM, SIGHUP}) std::signal(signal, SIG_DFL);
  }
};

// Results go to stdout, or to a file that appears complete or not at all.
class Output {
 public:
  explicit Output(const std::string& path) : path_(path) {
    if (path.empty()) return;
    temp_ = path + ".tmp";
    guard_.emplace(temp_);
    file_ = std::fopen(temp_.c_str(), "w");
    if (!file_) fail(path, "cannot create");
  }
  ~Output() {
    if (file_) {
      std::fclose(file_);
      std::remove(temp_.c_str());
    }
  }
  void line(const nlohmann::ordered_json& json) {
    const std::string text = json.dump() + "\n";
    std::fwrite(text.data(), 1, text.size(), file_ ? file_ : stdout);
    if (!file_) std::fflush(stdout);
  }
  void commit() {
    if (!file_) return;
    const bool ok = std::fflush(file_) == 0 && std::fclose(file_) == 0;
    file_ = nullptr;
    if (!ok || std::rename(temp_.c_str(), path_.c_str()) != 0) {
      std::remove(temp_.c_str());
      fail(path_, "cannot write");
    }
    guard_.reset();
  }

 private:
  std::string path_, temp_;
  std::optional<RemovedOnSignal> guard_;
  FILE* file_ = nullptr;
};

std::string rate_text(size_t done, size_t total, double seconds) {
  char text[96];
  const double rate = seconds > 0 ? static_cast<double>(done) / seconds : 0;
  std::snprintf(text, sizeof text, "%.2f rows/s, %.0f s left", rate, rate > 0 ? static_cast<double>(total - done) / rate : 0.0);
  return text;
}

// What the model cannot run in a row (a token outside its vocabulary, more positions than it is
// made for), or "".
std::string row_problem(const ScoreRow& row, const ModelConfig& config, bool allow_long_context) {
  size_t longest = 0;
  auto out_of_vocabulary = [&](const std::vector<int>& ids) -> std::string {
    for (int id : ids)
      if (id < 0 || id >= config.vocab_size)
        return "token id " + std::to_string(id) + " is outside the model's vocabulary (0.." + std::to_string(config.vocab_size - 1) + ")";
    return "";
  };
  if (std::string problem = out_of_vocabulary(row.prefix); !problem.empty()) return problem;
  for (const auto& choice : row.choices) {
    if (std::string problem = out_of_vocabulary(choice); !problem.empty()) return problem;
    longest = std::max(longest, choice.size());
  }
  return context_problem(config, static_cast<int64_t>(row.prefix.size() + longest), allow_long_context,
                         "the prefix (" + std::to_string(row.prefix.size()) + " tokens) and its longest choice (" +
                             std::to_string(longest) + ")");
}

}  // namespace

int run_score(const ScoreArgs& args) {
  std::optional<Tokenizer> tokenizer;
  std::vector<InputLine> lines = read_rows(args.input, args.run.model, tokenizer);
  const double start = now_seconds();
  Engine engine(args.run.model, engine_options(args.run));
  if (tokenizer) tokenizer->check_fits_model(engine.config().vocab_size);  // the tokenizer's fault, not a row's
  // A line that cannot be scored is reported in its place; every other line is scored.
  std::vector<ScoreRow> rows;
  std::vector<size_t> line_of_row;
  int unscored = 0;
  for (size_t i = 0; i < lines.size(); i++) {
    if (lines[i].row) lines[i].error = row_problem(*lines[i].row, engine.config(), args.run.allow_long_context);
    if (lines[i].error.empty()) {
      rows.push_back(std::move(*lines[i].row));
      line_of_row.push_back(i);
    } else {
      lines[i].row.reset();
      std::fprintf(stderr, "layerwise: error: %s:%d: %s\n", args.input.c_str(), lines[i].number, lines[i].error.c_str());
      unscored++;
    }
  }

  Output output(args.output);
  size_t next_line = 0;  // lines before it are written
  auto write_errors_before = [&](size_t line) {
    for (; next_line < line; next_line++)
      output.line(nlohmann::ordered_json{{"id", lines[next_line].id}, {"line", lines[next_line].number}, {"error", lines[next_line].error}});
  };
  Progress progress("score", rows.size(), args.run.quiet);
  ScoreOptions options;
  options.share_prefix = !args.no_share_prefix;
  options.max_rows_per_batch = args.max_batch_rows;
  options.on_row = [&](size_t r, const RowScore& score) {
    write_errors_before(line_of_row[r]);
    output.line(row_json(lines[line_of_row[r]], score));
    next_line = line_of_row[r] + 1;
    progress.update(r + 1, rate_text(r + 1, rows.size(), now_seconds() - start));
  };
  ScoreStats stats;
  if (!rows.empty()) score_rows(engine, rows, options, &stats);
  write_errors_before(lines.size());
  progress.finish();
  output.commit();
  if (!args.run.quiet) {
    const double seconds = now_seconds() - start;
    size_t choices = 0;
    for (const auto& row : rows) choices += row.choices.size();
    std::fprintf(stderr, "score     %zu rows, %zu choices, %zu tokens in %d batches of up to %d tokens%s: %.3f s (%.2f rows/s)\n",
                 rows.size(), choices, stats.tokens, stats.batches, stats.tokens_per_batch,
                 options.share_prefix ? "" : " (no prefix sharing)", seconds, static_cast<double>(rows.size()) / seconds);
    print_stream_report(engine, 0, args.run.profile);
  }
  if (unscored) {
    std::fprintf(stderr, "layerwise: error: %s: %d line(s) could not be scored (an error line each in the output); the other %zu rows were scored\n",
                 args.input.c_str(), unscored, rows.size());
    return 1;
  }
  return 0;
}

int run_perplexity(const PerplexityArgs& args) {
  const std::string text = read_file_text(args.text);
  const Tokenizer tokenizer = load_tokenizer(args.run.model);
  const auto encoded = tokenizer.encode(text, true, false);
  const std::vector<int> ids(encoded.begin(), encoded.end());
  Engine engine(args.run.model, engine_options(args.run));
  tokenizer.check_fits_model(engine.config().vocab_size);
  const int context = args.context > 0 ? args.context : static_cast<int>(std::min<int64_t>(context_limit(engine.config()), 4096));
  check_context(engine.config(), context, args.run.allow_long_context,
                (args.chunks ? "chunks of --context " : "windows of --context ") + std::to_string(context) + " tokens");
  const int stride = args.stride > 0 ? args.stride : std::max(1, context / 2);
  // llama.cpp puts BOS first in every chunk when its tokenizer adds one: ours did if ids start with it.
  const std::optional<int32_t> bos = tokenizer.bos_id();
  const int chunk_bos = bos && !ids.empty() && ids[0] == *bos ? *bos : -1;
  const PerplexityPlan plan = args.chunks ? llama_chunks(ids, context, chunk_bos) : sliding_windows(ids, context, stride);
  const std::vector<size_t> positions = plan.positions();
  const int vocab = engine.config().vocab_size;
  std::optional<DivergenceMeter> divergence;
  if (!args.kl_divergence.empty()) divergence.emplace(args.kl_divergence, vocab, ids, positions);
  std::optional<RemovedOnSignal> guard;
  std::optional<LogprobWriter> saved;
  if (!args.save_logprobs.empty()) {
    guard.emplace(args.save_logprobs + ".tmp");
    saved.emplace(args.save_logprobs, vocab, ids, positions);
  }
  std::optional<Progress> progress;
  const PerplexityResult result = perplexity(
      engine, plan,
      [&](int done, int windows) {
        if (!progress) progress.emplace(args.chunks ? "perplexity: chunks" : "perplexity: windows", static_cast<uint64_t>(windows), args.run.quiet);
        progress->update(static_cast<uint64_t>(done));
      },
      [&](size_t position, const float* logits, int) {
        if (saved) saved->add(position, logits);
        if (divergence) divergence->add(position, logits);
      });
  if (progress) progress->finish();
  if (saved) saved->commit();
  nlohmann::ordered_json json = {{"perplexity", result.perplexity()}, {"nll_sum", result.nll_sum},
                                 {"tokens_scored", result.tokens_scored}, {"text_tokens", ids.size()}};
  json[args.chunks ? "chunks" : "windows"] = result.windows;
  json["context"] = context;
  if (!args.chunks) json["stride"] = stride;
  if (divergence) {
    const DivergenceSummary d = divergence->summary();
    json["kl_divergence"] = {{"mean", d.mean}, {"mean_error", d.mean_error}, {"median", d.median}, {"p99", d.p99},
                             {"max", d.max}, {"same_top_token", d.same_top}, {"tokens", d.tokens}};
    if (!args.run.quiet)
      std::fprintf(stderr, "KL divergence from %s: mean %.6f +- %.6f, median %.6f, p99 %.6f, max %.6f; same top token %.2f%%\n",
                   args.kl_divergence.c_str(), d.mean, d.mean_error, d.median, d.p99, d.max, 100 * d.same_top);
  }
  std::printf("%s\n", json.dump().c_str());
  if (!args.run.quiet) {
    if (args.chunks)
      std::fprintf(stderr, "perplexity %.4f over %zu tokens (%d chunks of %d tokens, each scoring its last %d)\n", result.perplexity(),
                   result.tokens_scored, result.windows, context, context - 1 - context / 2);
    else
      std::fprintf(stderr, "perplexity %.4f over %zu tokens (%d windows of up to %d tokens, stride %d)\n", result.perplexity(),
                   result.tokens_scored, result.windows, context, stride);
    print_stream_report(engine, 0, args.run.profile);
  }
  return 0;
}

}  // namespace lw::cli
