// Reads byte ranges of checkpoint files into the caller's buffers as fast as the disk allows:
// around the page cache (O_DIRECT) in chunks of 1 MiB, several in flight through io_uring
// (pread where io_uring is refused or LAYERWISE_NO_IO_URING is set), or through the page cache
// with pread and the kernel's read-ahead. Every file is watched: one that ends early or
// changes while a run reads it stops the run with an error naming it, instead of computing on
// garbage.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace lw {

// O_DIRECT reads start at, fill and land on multiples of this (a page: every block size).
constexpr uint64_t kDirectAlignment = 4096;

struct ReadRange {
  int file = 0;
  uint64_t offset = 0;  // direct reads: offset, bytes and destination are multiples of kDirectAlignment
  uint64_t bytes = 0;   // read this much, or up to the end of the file when that comes after `needed`
  uint64_t needed = 0;  // bytes from `offset` that must arrive
  char* destination = nullptr;
  bool direct = false;  // around the page cache (only when ReadPipeline::direct())
};

class ReadPipeline {
 public:
  // Opens every file; `direct` asks for O_DIRECT, which a filesystem may refuse (then reads go
  // through the page cache and direct_refusal() says why). use_io_uring=false forces pread.
  ReadPipeline(const std::vector<std::string>& paths, bool direct, bool use_io_uring = true);
  ~ReadPipeline();
  ReadPipeline(const ReadPipeline&) = delete;
  ReadPipeline& operator=(const ReadPipeline&) = delete;

  // Fills every range, chunks of all ranges in flight together; returns the bytes read. Throws
  // lw::Error naming the file on an I/O error, an early end, or a change since it was opened.
  uint64_t read(const std::vector<ReadRange>& ranges);

  bool direct() const { return direct_; }
  const std::string& direct_refusal() const { return direct_refusal_; }
  const char* method() const;  // of direct reads: "io_uring" or "pread"

  static constexpr uint64_t kChunkBytes = 1ull << 20;
  static constexpr int kDepth = 8;

 private:
  struct OpenFile;
  struct Chunk;
  struct Ring;
  void check_unchanged(const OpenFile& file) const;
  bool settle(Chunk& chunk, int64_t result, const std::vector<ReadRange>& ranges) const;

  std::vector<OpenFile> files_;
  bool direct_ = false;
  std::string direct_refusal_;
  std::unique_ptr<Ring> ring_;  // null: pread
};

}  // namespace lw
