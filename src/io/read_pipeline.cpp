#include "io/read_pipeline.h"

#include <fcntl.h>
#include <liburing.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <utility>

#include "common/error.h"

namespace lw {

namespace {
struct UniqueFd {
  int fd = -1;
  UniqueFd() = default;
  UniqueFd(UniqueFd&& other) noexcept : fd(std::exchange(other.fd, -1)) {}
  UniqueFd& operator=(UniqueFd&&) = delete;
  ~UniqueFd() {
    if (fd >= 0) close(fd);
  }
};
}  // namespace

struct ReadPipeline::OpenFile {
  std::string path;
  UniqueFd cached, direct;
  uint64_t size = 0;
  timespec modified{};
};

struct ReadPipeline::Chunk {
  size_t range;
  uint64_t offset, bytes;
  char* destination;
};

struct ReadPipeline::Ring {
  io_uring ring{};
  bool ready = false;
  ~Ring() {
    if (ready) io_uring_queue_exit(&ring);
  }
};

namespace {
struct stat stat_of(int fd, const std::string& path) {
  struct stat info {};
  if (fstat(fd, &info) != 0) fail(path, std::string("cannot stat: ") + std::strerror(errno));
  return info;
}
}  // namespace

ReadPipeline::ReadPipeline(const std::vector<std::string>& paths, bool direct, bool use_io_uring) : direct_(direct) {
  files_.reserve(paths.size());
  for (const auto& path : paths) {
    OpenFile& file = files_.emplace_back();
    file.path = path;
    file.cached.fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (file.cached.fd < 0) fail(path, std::string("cannot open: ") + std::strerror(errno));
    posix_fadvise(file.cached.fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    const struct stat info = stat_of(file.cached.fd, path);
    file.size = static_cast<uint64_t>(info.st_size);
    file.modified = info.st_mtim;
    if (!direct_) continue;
    file.direct.fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_DIRECT);
    if (file.direct.fd < 0) {
      direct_refusal_ = path + ": the filesystem refuses O_DIRECT (" + std::strerror(errno) + ")";
      direct_ = false;
    }
  }
  if (use_io_uring && !std::getenv("LAYERWISE_NO_IO_URING")) {
    // Refused (old kernel, seccomp in a container): the same reads, one at a time with pread.
    auto ring = std::make_unique<Ring>();
    ring->ready = io_uring_queue_init(kDepth, &ring->ring, 0) == 0;
    if (ring->ready) ring_ = std::move(ring);
  }
}

ReadPipeline::~ReadPipeline() = default;

const char* ReadPipeline::method() const { return ring_ ? "io_uring" : "pread"; }

void ReadPipeline::check_unchanged(const OpenFile& file) const {
  const struct stat info = stat_of(file.cached.fd, file.path);
  if (static_cast<uint64_t>(info.st_size) != file.size)
    fail(file.path, "changed size during the run (" + std::to_string(file.size) + " -> " + std::to_string(info.st_size) +
                        " bytes): stopping rather than computing on mixed weights");
  if (info.st_mtim.tv_sec != file.modified.tv_sec || info.st_mtim.tv_nsec != file.modified.tv_nsec)
    fail(file.path, "was modified during the run: stopping rather than computing on mixed weights");
}

// Accounts for one finished read of `chunk`: true when the chunk is complete, false when the
// rest of it (now described by `chunk`) must be read again.
bool ReadPipeline::settle(Chunk& chunk, int64_t result, const std::vector<ReadRange>& ranges) const {
  const ReadRange& range = ranges[chunk.range];
  const OpenFile& file = files_[static_cast<size_t>(range.file)];
  if (result == -EINTR || result == -EAGAIN) return false;
  if (result < 0)
    fail(file.path, "read failed at byte " + std::to_string(chunk.offset) + ": " + std::strerror(static_cast<int>(-result)));
  const auto got = static_cast<uint64_t>(result);
  chunk.offset += got;
  chunk.destination += got;
  chunk.bytes -= got;
  const uint64_t needed_end = range.offset + range.needed;
  if (chunk.bytes == 0 || chunk.offset >= needed_end) return true;  // past the end of what matters: the file's end
  // A read that returns less stops at the end of the file (direct reads stop only there).
  if (got == 0 || (range.direct && chunk.offset % kDirectAlignment != 0))
    fail(file.path, "ends at byte " + std::to_string(chunk.offset) + " but the weights reach byte " + std::to_string(needed_end) +
                        ": the file was truncated or is being rewritten");
  return false;
}

uint64_t ReadPipeline::read(const std::vector<ReadRange>& ranges) {
  // Reads through the page cache go one after the other with pread: the kernel's read-ahead
  // keeps the disk busy, while io_uring hands each cache miss to a worker thread and the
  // workers' interleaved reads defeat read-ahead (measured: 0.5 against 1.4 GB/s cold).
  // Direct reads have no read-ahead: several in flight keep the disk busy.
  std::deque<Chunk> pending, cached;
  for (size_t r = 0; r < ranges.size(); r++) {
    const ReadRange& range = ranges[r];
    if (range.file < 0 || static_cast<size_t>(range.file) >= files_.size() || range.needed > range.bytes ||
        (range.direct && (!direct_ || range.offset % kDirectAlignment || range.bytes % kDirectAlignment ||
                          reinterpret_cast<uintptr_t>(range.destination) % kDirectAlignment)))
      fail("internal error: a read range is out of bounds or misaligned");
    check_unchanged(files_[static_cast<size_t>(range.file)]);
    for (uint64_t at = 0; at < range.bytes; at += kChunkBytes)
      (range.direct && ring_ ? pending : cached).push_back({r, range.offset + at, std::min(kChunkBytes, range.bytes - at), range.destination + at});
  }
  auto fd_of = [&](const Chunk& chunk) {
    const ReadRange& range = ranges[chunk.range];
    const OpenFile& file = files_[static_cast<size_t>(range.file)];
    return range.direct ? file.direct.fd : file.cached.fd;
  };
  uint64_t total = 0;
  auto account = [&](int64_t result) {
    if (result > 0) total += static_cast<uint64_t>(result);
  };

  while (!cached.empty()) {
    Chunk& chunk = cached.front();
    const ssize_t got = pread(fd_of(chunk), chunk.destination, chunk.bytes, static_cast<off_t>(chunk.offset));
    const int64_t result = got < 0 ? -errno : got;
    account(result);
    if (settle(chunk, result, ranges)) cached.pop_front();
  }
  if (!pending.empty()) {
    // Up to kDepth chunks in flight. After a failure nothing new is submitted, and what is in
    // flight is waited for before throwing: the kernel must not write into buffers we hand back.
    io_uring& ring = ring_->ring;
    Chunk in_flight[kDepth];
    std::vector<int> free_slots;
    for (int s = kDepth - 1; s >= 0; s--) free_slots.push_back(s);
    int active = 0;
    std::string failure;
    while (active > 0 || (!pending.empty() && failure.empty())) {
      while (failure.empty() && !pending.empty() && !free_slots.empty()) {
        io_uring_sqe* sqe = io_uring_get_sqe(&ring);
        if (!sqe) break;
        const int slot = free_slots.back();
        free_slots.pop_back();
        in_flight[slot] = pending.front();
        pending.pop_front();
        const Chunk& chunk = in_flight[slot];
        io_uring_prep_read(sqe, fd_of(chunk), chunk.destination, static_cast<unsigned>(chunk.bytes), chunk.offset);
        io_uring_sqe_set_data64(sqe, static_cast<uint64_t>(slot));
        active++;
      }
      const int submitted = io_uring_submit_and_wait(&ring, 1);
      if (submitted < 0 && submitted != -EINTR && failure.empty())
        failure = std::string("io_uring submission failed: ") + std::strerror(-submitted);
      io_uring_cqe* cqe = nullptr;
      while (io_uring_peek_cqe(&ring, &cqe) == 0) {
        const int slot = static_cast<int>(io_uring_cqe_get_data64(cqe));
        const int64_t result = cqe->res;
        io_uring_cqe_seen(&ring, cqe);
        active--;
        free_slots.push_back(slot);
        account(result);
        try {
          if (!settle(in_flight[slot], result, ranges)) pending.push_front(in_flight[slot]);
        } catch (const Error& error) {
          if (failure.empty()) failure = error.what();
        }
      }
      if (submitted < 0 && submitted != -EINTR && active > 0) {
        // Nothing was submitted this round: wait for what is already in flight.
        if (io_uring_wait_cqe(&ring, &cqe) != 0) break;
      }
    }
    if (!failure.empty()) throw Error(failure);
  }
  for (const ReadRange& range : ranges) check_unchanged(files_[static_cast<size_t>(range.file)]);
  return total;
}

}  // namespace lw
