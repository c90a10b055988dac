// Moves units from disk into memory. The reader thread walks the sweep order (layer 0 .. head)
// again and again, loading resident units once into their own buffers and streamed units into a
// small ring of buffers, as far ahead as free buffers allow; the compute thread acquires each
// unit in the same order and releases it when the batch has passed it.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "backend/backend.h"
#include "checkpoint/checkpoint.h"
#include "common/file.h"
#include "common/system.h"
#include "io/read_pipeline.h"
#include "plan/plan.h"

namespace lw {

// Where a unit's bytes land in its buffer, and the reads that fill it. A read's bytes land at a
// buffer offset congruent to their file offset modulo kDirectAlignment, with room to round the
// read out to whole pages, so the same layout serves reads through and around the page cache.
struct UnitLayout {
  struct Read {
    int file;
    uint64_t offset, bytes, buffer_offset;
    // A tensor whose stored bytes need decoding (GGUF): they are read to the end of its region,
    // which starts at region_offset, and decoded there.
    const TensorLocation* decode = nullptr;
    uint64_t region_offset = 0;
  };
  std::vector<Read> reads;
  std::vector<uint64_t> tensor_offsets;  // parallel to UnitSource::tensors
  uint64_t buffer_bytes = 0;
};
UnitLayout layout_unit(const UnitSource& unit);

// Fills buffer (layout.buffer_bytes, page-aligned) with the unit's tensors, decoding those that
// need it; returns the bytes read from disk.
uint64_t read_unit(ReadPipeline& pipeline, const UnitLayout& layout, char* buffer);

// Embedding rows of these tokens as float32, read on demand (the table is never loaded whole).
class EmbeddingReader {
 public:
  explicit EmbeddingReader(const Checkpoint& checkpoint);
  void read_rows(const int32_t* tokens, int count, float* out) const;

 private:
  const TensorLocation& table_;
  File file_;
};

// The weights of one loaded unit, by role.
struct UnitWeights {
  WeightView views[static_cast<int>(Role::Count)] = {};
  bool has[static_cast<int>(Role::Count)] = {};
  const WeightView& operator[](Role role) const { return views[static_cast<int>(role)]; }
  const WeightView* optional(Role role) const { return has[static_cast<int>(role)] ? &views[static_cast<int>(role)] : nullptr; }
};
UnitWeights unit_weights(const UnitSource& unit, const UnitLayout& layout, const char* buffer);

// Per unit (index as in checkpoint.units) and summed.
struct StreamStats {
  uint64_t bytes_read = 0;
  uint64_t unit_loads = 0;
  double read_seconds = 0;  // reader thread inside read calls
  double wait_seconds = 0;  // compute thread waiting for a unit to arrive
  uint64_t bytes_verified = 0;  // hashed against a split manifest's checksums
  double verify_seconds = 0;     // reader thread hashing them (part of read_seconds)
  std::vector<uint64_t> loads_per_unit, bytes_per_unit;
  std::vector<double> read_seconds_per_unit, wait_seconds_per_unit;
  void add(const StreamStats& other);
};

class Streamer {
 public:
  // Reads through the page cache or around it as the plan says (plan.direct_io). Files with a
  // checksum (checkpoint.file_xxh3) whose entry in *verified_files is false are hashed the first
  // time they are read, and marked; nullptr: no checksums are checked.
  Streamer(const Checkpoint& checkpoint, const MemoryPlan& plan, bool prefetch, std::vector<bool>* verified_files = nullptr);
  ~Streamer();
  Streamer(const Streamer&) = delete;
  Streamer& operator=(const Streamer&) = delete;

  // Blocks until unit `index` (1 .. units-1, in sweep order) is in memory.
  const UnitWeights& acquire(int index);
  // The batch has passed this unit: its streaming buffer may be reused.
  void release(int index);
  StreamStats stats() const;
  // "direct (io_uring, 8 x 1 MiB in flight)", or why the page cache is used after all.
  std::string io_description() const;

 private:
  struct Slot {
    MappedBuffer buffer;
    int unit = -1;
    UnitWeights weights;
  };
  void reader_loop();
  void load(int unit, char* buffer);
  bool needs_verifying(int file) const;
  // Stops the run (lw::Error naming the file) unless the file matches its manifest checksum.
  void verify_file(int file, const UnitLayout* layout, const char* buffer);

  const Checkpoint& checkpoint_;
  ReadPipeline pipeline_;
  std::vector<UnitLayout> layouts_;
  std::vector<bool> resident_;
  std::vector<MappedBuffer> resident_buffers_;
  std::vector<UnitWeights> resident_weights_;
  std::vector<bool> resident_ready_;
  std::vector<Slot> slots_;
  std::deque<int> ready_slots_;  // filled, in sweep order
  std::vector<int> free_slots_;
  bool prefetch_;
  std::vector<bool>* verified_files_;
  bool stopping_ = false;
  std::string read_error_;
  int in_use_ = -1;  // slot held by the compute thread
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  StreamStats stats_;
  std::thread reader_thread_;
};

}  // namespace lw
