#include "score/divergence.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>

#include "common/error.h"

namespace lw {
namespace {

constexpr char kMagic[8] = {'L', 'W', 'L', 'O', 'G', 'P', 'R', 'B'};
constexpr uint32_t kVersion = 2;

uint64_t header_bytes(size_t tokens, size_t positions) {
  return 8 + 4 + 4 + 8 + 8 + 4 * static_cast<uint64_t>(tokens) + 8 * static_cast<uint64_t>(positions);
}

// The index of `position` in the ascending `positions`, or positions.size() when absent.
size_t index_of(const std::vector<size_t>& positions, size_t position) {
  const auto at = std::lower_bound(positions.begin(), positions.end(), position);
  return at != positions.end() && *at == position ? static_cast<size_t>(at - positions.begin()) : positions.size();
}

std::string describe(const std::vector<size_t>& positions) {
  if (positions.empty()) return "no positions";
  return std::to_string(positions.size()) + " positions from " + std::to_string(positions.front()) + " to " +
         std::to_string(positions.back());
}

// Log-softmax of a row of logits, in double.
void log_softmax(const float* logits, int vocab, std::vector<double>& out) {
  out.resize(static_cast<size_t>(vocab));
  const double top = *std::max_element(logits, logits + vocab);
  double total = 0;
  for (int i = 0; i < vocab; i++) total += std::exp(static_cast<double>(logits[i]) - top);
  const double normalizer = top + std::log(total);
  for (int i = 0; i < vocab; i++) out[static_cast<size_t>(i)] = static_cast<double>(logits[i]) - normalizer;
}

void write_at(int fd, const std::string& path, const void* data, size_t bytes, uint64_t offset) {
  const char* at = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t done = pwrite(fd, at, bytes, static_cast<off_t>(offset));
    if (done < 0 && errno == EINTR) continue;
    if (done <= 0) fail(path, std::string("cannot write: ") + std::strerror(errno));
    at += done, bytes -= static_cast<size_t>(done), offset += static_cast<uint64_t>(done);
  }
}

void read_at(int fd, const std::string& path, void* data, size_t bytes, uint64_t offset) {
  char* at = static_cast<char*>(data);
  while (bytes > 0) {
    const ssize_t done = pread(fd, at, bytes, static_cast<off_t>(offset));
    if (done < 0 && errno == EINTR) continue;
    if (done < 0) fail(path, std::string("cannot read: ") + std::strerror(errno));
    if (done == 0) fail(path, "ends early (truncated?)");
    at += done, bytes -= static_cast<size_t>(done), offset += static_cast<uint64_t>(done);
  }
}

}  // namespace

LogprobWriter::LogprobWriter(std::string path, int vocab, const std::vector<int>& tokens, const std::vector<size_t>& positions)
    : path_(std::move(path)), temp_path_(path_ + ".tmp"), vocab_(vocab), positions_(positions), written_(positions.size(), false) {
  for (size_t i = 0; i < positions_.size(); i++)
    if (positions_[i] == 0 || positions_[i] >= tokens.size() || (i > 0 && positions_[i] <= positions_[i - 1]))
      fail(path_, "positions to save must ascend within 1 .. " + std::to_string(tokens.size() - 1));
  fd_ = open(temp_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) fail(temp_path_, std::string("cannot create: ") + std::strerror(errno));
  std::vector<char> header(header_bytes(tokens.size(), positions_.size()));
  const uint32_t vocab_u32 = static_cast<uint32_t>(vocab);
  const uint64_t count = tokens.size(), scored = positions_.size();
  std::memcpy(header.data(), kMagic, 8);
  std::memcpy(header.data() + 8, &kVersion, 4);
  std::memcpy(header.data() + 12, &vocab_u32, 4);
  std::memcpy(header.data() + 16, &count, 8);
  std::memcpy(header.data() + 24, &scored, 8);
  char* at = header.data() + 32;
  for (const int token : tokens) {
    const int32_t id = token;
    std::memcpy(at, &id, 4);
    at += 4;
  }
  for (const size_t position : positions_) {
    const uint64_t p = position;
    std::memcpy(at, &p, 8);
    at += 8;
  }
  write_at(fd_, temp_path_, header.data(), header.size(), 0);
  rows_offset_ = header.size();
}

LogprobWriter::~LogprobWriter() {
  if (fd_ >= 0) {
    close(fd_);
    unlink(temp_path_.c_str());
  }
}

void LogprobWriter::add(size_t position, const float* logits) {
  const size_t index = index_of(positions_, position);
  if (index == positions_.size()) fail(path_, "position " + std::to_string(position) + " is not one to save");
  std::vector<double> logprobs;
  log_softmax(logits, vocab_, logprobs);
  row_.assign(logprobs.begin(), logprobs.end());
  const uint64_t row_bytes = 4 * static_cast<uint64_t>(vocab_);
  write_at(fd_, temp_path_, row_.data(), row_bytes, rows_offset_ + index * row_bytes);
  written_[index] = true;
}

void LogprobWriter::commit() {
  if (std::find(written_.begin(), written_.end(), false) != written_.end()) fail(temp_path_, "not every position was written");
  if (fsync(fd_) != 0 || close(fd_) != 0) {
    fd_ = -1;
    unlink(temp_path_.c_str());
    fail(temp_path_, std::string("cannot write: ") + std::strerror(errno));
  }
  fd_ = -1;
  if (rename(temp_path_.c_str(), path_.c_str()) != 0) {
    unlink(temp_path_.c_str());
    fail(path_, std::string("cannot rename the finished file into place: ") + std::strerror(errno));
  }
}

DivergenceMeter::DivergenceMeter(const std::string& path, int vocab, const std::vector<int>& tokens, const std::vector<size_t>& positions)
    : path_(path), vocab_(vocab), positions_(positions), divergences_(positions.size(), NAN), same_top_(positions.size(), false) {
  fd_ = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) fail(path, std::string("cannot open: ") + std::strerror(errno));
  const off_t size = lseek(fd_, 0, SEEK_END);
  char head[32] = {};
  if (size < 32) fail(path, "too short to be a --save-logprobs file");
  read_at(fd_, path, head, 32, 0);
  uint32_t version = 0, saved_vocab = 0;
  uint64_t count = 0, scored = 0;
  std::memcpy(&version, head + 8, 4);
  std::memcpy(&saved_vocab, head + 12, 4);
  std::memcpy(&count, head + 16, 8);
  std::memcpy(&scored, head + 24, 8);
  if (std::memcmp(head, kMagic, 8) != 0) fail(path, "not a file written by layerwise perplexity --save-logprobs");
  if (version != kVersion)
    fail(path, "version " + std::to_string(version) + " (this build reads version " + std::to_string(kVersion) + ": save it again)");
  if (saved_vocab != static_cast<uint32_t>(vocab))
    fail(path, "saved for a vocabulary of " + std::to_string(saved_vocab) + " tokens; this model has " + std::to_string(vocab));
  if (count != tokens.size())
    fail(path, "saved for a text of " + std::to_string(count) + " tokens; this text has " + std::to_string(tokens.size()));
  if (scored > count) fail(path, "claims " + std::to_string(scored) + " positions in a text of " + std::to_string(count) + " tokens");
  std::vector<int32_t> saved(tokens.size());
  read_at(fd_, path, saved.data(), 4 * saved.size(), 32);
  for (size_t i = 0; i < tokens.size(); i++)
    if (saved[i] != tokens[i])
      fail(path, "saved for other token ids (position " + std::to_string(i) + ": " + std::to_string(saved[i]) + ", here " +
                     std::to_string(tokens[i]) + "): another text or tokenizer");
  std::vector<uint64_t> saved_positions(scored);
  read_at(fd_, path, saved_positions.data(), 8 * saved_positions.size(), 32 + 4 * static_cast<uint64_t>(tokens.size()));
  if (!std::equal(saved_positions.begin(), saved_positions.end(), positions.begin(), positions.end(),
                  [](uint64_t a, size_t b) { return a == b; })) {
    const std::vector<size_t> theirs(saved_positions.begin(), saved_positions.end());
    fail(path, "saved for other positions (" + describe(theirs) + "; this run scores " + describe(positions) +
                   "): another --context, --stride or --chunks");
  }
  rows_offset_ = header_bytes(tokens.size(), positions.size());
  const uint64_t expected = rows_offset_ + positions.size() * 4 * static_cast<uint64_t>(vocab);
  if (static_cast<uint64_t>(size) != expected)
    fail(path, "is " + std::to_string(size) + " bytes; its header implies " + std::to_string(expected) + " (truncated?)");
}

DivergenceMeter::~DivergenceMeter() {
  if (fd_ >= 0) close(fd_);
}

void DivergenceMeter::add(size_t position, const float* logits) {
  const size_t index = index_of(positions_, position);
  if (index == positions_.size()) fail(path_, "position " + std::to_string(position) + " was not saved");
  const uint64_t row_bytes = 4 * static_cast<uint64_t>(vocab_);
  saved_.resize(static_cast<size_t>(vocab_));
  read_at(fd_, path_, saved_.data(), row_bytes, rows_offset_ + index * row_bytes);
  std::vector<double> ours;
  log_softmax(logits, vocab_, ours);
  // Both sides rounded to float32 as the file stores them: the same logits give exactly 0.
  double divergence = 0;
  for (int i = 0; i < vocab_; i++) {
    const double p = static_cast<double>(saved_[static_cast<size_t>(i)]);
    divergence += std::exp(p) * (p - static_cast<double>(static_cast<float>(ours[static_cast<size_t>(i)])));
  }
  divergences_[index] = divergence;
  same_top_[index] = std::max_element(saved_.begin(), saved_.end()) - saved_.begin() ==
                            std::max_element(logits, logits + vocab_) - logits;
}

DivergenceSummary DivergenceMeter::summary() const {
  DivergenceSummary s;
  std::vector<double> values;
  size_t same = 0;
  for (size_t i = 0; i < divergences_.size(); i++)
    if (!std::isnan(divergences_[i])) values.push_back(divergences_[i]), same += same_top_[i] ? 1 : 0;
  s.tokens = values.size();
  if (values.empty()) return s;
  double sum = 0, squares = 0;
  for (double v : values) sum += v, squares += v * v;
  const double n = static_cast<double>(values.size());
  s.mean = sum / n;
  s.mean_error = values.size() > 1 ? std::sqrt(std::max(0.0, squares / n - s.mean * s.mean) / (n - 1)) : 0;
  std::sort(values.begin(), values.end());
  s.median = values[values.size() / 2];
  s.p99 = values[std::min(values.size() - 1, static_cast<size_t>(0.99 * n))];
  s.max = values.back();
  s.same_top = static_cast<double>(same) / n;
  return s;
}

}  // namespace lw
