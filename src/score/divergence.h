// How far one model's next-token distributions lie from another's on the same text: the first
// run saves its log-probabilities (`perplexity --save-logprobs`), the second compares against
// them (`perplexity --kl-divergence`), as llama-perplexity's --kl-divergence-base and
// --kl-divergence do. The file, little-endian:
//
//   "LWLOGPRB" | u32 version (2) | u32 vocab | u64 n (text tokens) | u64 m (positions scored) |
//   n x i32 token ids | m x u64 positions, ascending, each in 1 .. n - 1 |
//   m x vocab x f32: the log-probabilities that predict the token at each position, in that order
//
// The token ids make sure both runs read the same text with the same tokenizer, the positions
// that both scored the same tokens (sliding windows score 1 .. n - 1, --chunks a subset).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace lw {

class LogprobWriter {
 public:
  // Creates PATH.tmp, renamed to PATH by commit(); removed if the writer dies uncommitted.
  // `positions`: those the run will add, ascending, each in 1 .. tokens.size() - 1.
  LogprobWriter(std::string path, int vocab, const std::vector<int>& tokens, const std::vector<size_t>& positions);
  ~LogprobWriter();
  LogprobWriter(const LogprobWriter&) = delete;
  LogprobWriter& operator=(const LogprobWriter&) = delete;
  // The logits that predict tokens[position] (one of the positions), in any order.
  void add(size_t position, const float* logits);
  void commit();  // throws unless every position was added
  const std::string& temporary_path() const { return temp_path_; }

 private:
  std::string path_, temp_path_;
  int fd_ = -1;
  int vocab_;
  uint64_t rows_offset_ = 0;
  std::vector<size_t> positions_;
  std::vector<bool> written_;  // per position
  std::vector<float> row_;
};

struct DivergenceSummary {
  size_t tokens = 0;
  double mean = 0, mean_error = 0;  // KL(saved || this run) in nats, and its standard error
  double median = 0, p99 = 0, max = 0;
  double same_top = 0;  // share of positions where both runs' most likely token is the same
};

class DivergenceMeter {
 public:
  // Opens a file LogprobWriter wrote; throws lw::Error naming it when it is malformed, or was
  // saved for another vocabulary, another token sequence or other positions than `positions`
  // (those this run will add).
  DivergenceMeter(const std::string& path, int vocab, const std::vector<int>& tokens, const std::vector<size_t>& positions);
  ~DivergenceMeter();
  DivergenceMeter(const DivergenceMeter&) = delete;
  DivergenceMeter& operator=(const DivergenceMeter&) = delete;
  void add(size_t position, const float* logits);
  DivergenceSummary summary() const;

 private:
  std::string path_;
  int fd_ = -1;
  int vocab_;
  uint64_t rows_offset_ = 0;
  std::vector<size_t> positions_;
  std::vector<double> divergences_;  // per position; NaN until added
  std::vector<bool> same_top_;
  std::vector<float> saved_;
};

}  // namespace lw
