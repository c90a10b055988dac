#include "runtime/streamer.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "common/error.h"
#include "common/sizes.h"
#include "common/system.h"
#include "format/manifest.h"

namespace lw {
namespace {

constexpr uint64_t kAlignment = 64;  // decoded regions: cache lines
constexpr uint64_t kMaxGapToCoalesce = 64 << 10;

uint64_t align_up(uint64_t value, uint64_t alignment) { return (value + alignment - 1) / alignment * alignment; }

class Xxh3 {
 public:
  Xxh3() : state_(XXH3_createState()) {
    if (!state_) fail("out of memory for a checksum");
    XXH3_64bits_reset(state_);
  }
  ~Xxh3() { XXH3_freeState(state_); }
  Xxh3(const Xxh3&) = delete;
  Xxh3& operator=(const Xxh3&) = delete;
  void update(const void* data, uint64_t bytes) { XXH3_64bits_update(state_, data, bytes); }
  uint64_t digest() const { return XXH3_64bits_digest(state_); }

 private:
  XXH3_state_t* state_;
};

// Hashes bytes [from, to) of a file read through the page cache; `drop_from_cache` gives those
// pages back afterwards (a run that reads around the cache must not fill it).
void hash_file_range(const std::string& path, uint64_t from, uint64_t to, bool drop_from_cache, Xxh3& hash) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, std::string("cannot open: ") + std::strerror(errno));
  std::vector<char> chunk(std::min<uint64_t>(to - from, 1 << 20));
  for (uint64_t at = from; at < to;) {
    const ssize_t got = pread(fd, chunk.data(), std::min<uint64_t>(chunk.size(), to - at), static_cast<off_t>(at));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      const std::string why = got < 0 ? std::strerror(errno) : "the file ends early";
      close(fd);
      fail(path, "cannot read byte " + std::to_string(at) + " to check its checksum: " + why);
    }
    hash.update(chunk.data(), static_cast<uint64_t>(got));
    at += static_cast<uint64_t>(got);
  }
  if (drop_from_cache) posix_fadvise(fd, static_cast<off_t>(from), static_cast<off_t>(to - from), POSIX_FADV_DONTNEED);
  close(fd);
}

uint64_t file_size_of(const std::string& path) {
  struct stat info {};
  if (stat(path.c_str(), &info) != 0) fail(path, std::string("cannot stat: ") + std::strerror(errno));
  return static_cast<uint64_t>(info.st_size);
}

}  // namespace

UnitLayout layout_unit(const UnitSource& unit) {
  UnitLayout layout;
  std::vector<size_t> order(unit.tensors.size());
  for (size_t i = 0; i < order.size(); i++) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    const auto &x = unit.tensors[a], &y = unit.tensors[b];
    return x.file != y.file ? x.file < y.file : x.offset < y.offset;
  });
  layout.tensor_offsets.resize(unit.tensors.size());
  for (size_t i : order) {
    const TensorLocation& tensor = unit.tensors[i];
    if (tensor.needs_decoding()) {  // its own region, its own read
      const uint64_t region = align_up(layout.buffer_bytes, kAlignment);
      layout.reads.push_back({tensor.file, tensor.offset, tensor.bytes, region + tensor.loaded_bytes() - tensor.bytes, &tensor, region});
      layout.tensor_offsets[i] = region;
      layout.buffer_bytes = region + tensor.loaded_bytes();
      continue;
    }
    UnitLayout::Read* last = layout.reads.empty() ? nullptr : &layout.reads.back();
    const bool joins = last && !last->decode && last->file == tensor.file && tensor.offset >= last->offset + last->bytes &&
                       tensor.offset - (last->offset + last->bytes) <= kMaxGapToCoalesce;
    const bool shares = last && !last->decode && last->file == tensor.file && tensor.offset >= last->offset &&
                        tensor.offset + tensor.bytes <= last->offset + last->bytes;  // a tied tensor read twice
    if (shares) {
      layout.tensor_offsets[i] = last->buffer_offset + (tensor.offset - last->offset);
      continue;
    }
    if (joins) {
      last->bytes = tensor.offset + tensor.bytes - last->offset;
    } else {
      // The file's offset modulo a page: a direct read of whole pages lands the bytes here.
      uint64_t start = align_up(layout.buffer_bytes, kDirectAlignment) + tensor.offset % kDirectAlignment;
      layout.reads.push_back({tensor.file, tensor.offset, tensor.bytes, start});
      last = &layout.reads.back();
    }
    layout.tensor_offsets[i] = last->buffer_offset + (tensor.offset - last->offset);
    layout.buffer_bytes = std::max(layout.buffer_bytes, align_up(last->buffer_offset + last->bytes, kDirectAlignment));
  }
  return layout;
}

uint64_t read_unit(ReadPipeline& pipeline, const UnitLayout& layout, char* buffer) {
  std::vector<ReadRange> ranges;
  for (const auto& read : layout.reads) {
    const bool direct = pipeline.direct() && !read.decode;  // decoded tensors: unaligned, through the cache
    const uint64_t head = direct ? read.offset % kDirectAlignment : 0;
    ranges.push_back({read.file, read.offset - head, direct ? align_up(head + read.bytes, kDirectAlignment) : read.bytes,
                      head + read.bytes, buffer + read.buffer_offset - head, direct});
  }
  const uint64_t bytes = pipeline.read(ranges);
  for (const auto& read : layout.reads)
    if (read.decode) decode_rows(*read.decode, buffer + read.region_offset, read.decode->rows());
  return bytes;
}

void StreamStats::add(const StreamStats& other) {
  bytes_read += other.bytes_read;
  unit_loads += other.unit_loads;
  read_seconds += other.read_seconds;
  wait_seconds += other.wait_seconds;
  bytes_verified += other.bytes_verified;
  verify_seconds += other.verify_seconds;
  auto add_each = [](auto& into, const auto& from) {
    if (into.size() < from.size()) into.resize(from.size());
    for (size_t i = 0; i < from.size(); i++) into[i] += from[i];
  };
  add_each(loads_per_unit, other.loads_per_unit);
  add_each(bytes_per_unit, other.bytes_per_unit);
  add_each(read_seconds_per_unit, other.read_seconds_per_unit);
  add_each(wait_seconds_per_unit, other.wait_seconds_per_unit);
}

EmbeddingReader::EmbeddingReader(const Checkpoint& checkpoint)
    : table_(checkpoint.embed().tensors[0]), file_(checkpoint.files[static_cast<size_t>(table_.file)]) {}

void EmbeddingReader::read_rows(const int32_t* tokens, int count, float* out) const {
  const uint64_t width = table_.row_elements(), stored = table_.stored_row_bytes(), loaded = table_.loaded_row_bytes();
  std::vector<char> row(loaded);
  for (int t = 0; t < count; t++) {
    file_.read_at(row.data() + loaded - stored, stored, table_.offset + static_cast<uint64_t>(tokens[t]) * stored);
    decode_rows(table_, row.data(), 1);
    convert_to_f32(row.data(), table_.dtype, width, out + static_cast<uint64_t>(t) * width);
  }
}

UnitWeights unit_weights(const UnitSource& source, const UnitLayout& layout, const char* buffer) {
  UnitWeights weights;
  for (size_t i = 0; i < source.tensors.size(); i++) {
    const auto& shape = source.tensors[i].shape;
    int role = static_cast<int>(source.recipe.tensors[i].role);
    weights.views[role] = {buffer + layout.tensor_offsets[i], source.tensors[i].dtype, shape.size() == 2 ? shape[0] : 1,
                           shape.back()};
    weights.has[role] = true;
  }
  return weights;
}

Streamer::Streamer(const Checkpoint& checkpoint, const MemoryPlan& plan, bool prefetch, std::vector<bool>* verified_files)
    : checkpoint_(checkpoint), pipeline_(checkpoint.files, plan.direct_io), resident_(plan.resident), prefetch_(prefetch),
      verified_files_(verified_files) {
  if (verified_files_) verified_files_->resize(checkpoint.files.size(), false);
  const size_t units = checkpoint.units.size();
  for (const auto& unit : checkpoint.units) layouts_.push_back(layout_unit(unit));
  resident_buffers_.resize(units);
  resident_weights_.resize(units);
  resident_ready_.assign(units, false);
  stats_.loads_per_unit.assign(units, 0);
  stats_.bytes_per_unit.assign(units, 0);
  stats_.read_seconds_per_unit.assign(units, 0);
  stats_.wait_seconds_per_unit.assign(units, 0);
  for (size_t u = 1; u < units; u++)
    if (resident_[u]) resident_buffers_[u] = MappedBuffer(layouts_[u].buffer_bytes);
  slots_.resize(static_cast<size_t>(plan.stream_slots));
  for (size_t s = 0; s < slots_.size(); s++) {
    slots_[s].buffer = MappedBuffer(plan.slot_bytes);
    free_slots_.push_back(static_cast<int>(s));
  }
  reader_thread_ = std::thread([this] { reader_loop(); });
}

Streamer::~Streamer() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  reader_thread_.join();
}

bool Streamer::needs_verifying(int file) const {
  const auto f = static_cast<size_t>(file);
  return verified_files_ && f < checkpoint_.file_xxh3.size() && checkpoint_.file_xxh3[f] && !(*verified_files_)[f];
}

void Streamer::verify_file(int file, const UnitLayout* layout, const char* buffer) {
  const double start = now_seconds();
  const auto f = static_cast<size_t>(file);
  const std::string& path = checkpoint_.files[f];
  const uint64_t size = file_size_of(path);
  Xxh3 hash;
  // A unit file split wrote is its header, then tensors 64-byte aligned to its end, so the unit's
  // one read (gaps under 64 KiB are read through) holds everything after the header: hash that
  // in the buffer and read only the header (a few KiB, cached since the checkpoint was opened)
  // again. Any other layout, and the embedding table (read only row by row), are read again whole.
  const UnitLayout::Read* read = layout && layout->reads.size() == 1 ? &layout->reads[0] : nullptr;
  if (read && read->file == file && !read->decode && read->offset + read->bytes == size && read->offset <= (1u << 20)) {
    hash_file_range(path, 0, read->offset, false, hash);
    hash.update(buffer + read->buffer_offset, read->bytes);
  } else {
    hash_file_range(path, 0, size, pipeline_.direct(), hash);
  }
  const uint64_t expected = *checkpoint_.file_xxh3[f], got = hash.digest();
  if (got != expected)
    fail(path, "checksum mismatch (manifest " + format_xxh3(expected) + ", read " + format_xxh3(got) +
                   "): the file changed since split; rerun split, or check the directory with layerwise split --out DIR --verify");
  (*verified_files_)[f] = true;
  std::lock_guard lock(mutex_);
  stats_.bytes_verified += size;
  stats_.verify_seconds += now_seconds() - start;
}

void Streamer::load(int unit, char* buffer) {
  const double start = now_seconds();
  const UnitLayout& layout = layouts_[static_cast<size_t>(unit)];
  const uint64_t bytes = read_unit(pipeline_, layout, buffer);
  if (!layout.reads.empty() && needs_verifying(layout.reads[0].file)) verify_file(layout.reads[0].file, &layout, buffer);
  const double seconds = now_seconds() - start;
  std::lock_guard lock(mutex_);
  stats_.bytes_read += bytes;
  stats_.unit_loads++;
  stats_.read_seconds += seconds;
  const auto u = static_cast<size_t>(unit);
  stats_.loads_per_unit[u]++;
  stats_.bytes_per_unit[u] += bytes;
  stats_.read_seconds_per_unit[u] += seconds;
}

std::string Streamer::io_description() const {
  std::string text = "through the page cache (pread, kernel read-ahead)";
  if (pipeline_.direct())
    text = std::string("direct (") + pipeline_.method() + ", up to " +
           std::to_string(std::string(pipeline_.method()) == "io_uring" ? ReadPipeline::kDepth : 1) + " reads of " +
           format_size(ReadPipeline::kChunkBytes) + " in flight)";
  if (!pipeline_.direct_refusal().empty()) text += "; direct reads refused: " + pipeline_.direct_refusal();
  return text;
}

void Streamer::reader_loop() {
  const int units = static_cast<int>(checkpoint_.units.size());
  bool any_streamed = false;
  for (int u = 1; u < units; u++) any_streamed |= !resident_[static_cast<size_t>(u)];
  try {
    for (bool first_pass = true;; first_pass = false) {
      for (int u = 1; u < units; u++) {
        // The embedding table is read row by row, never as a unit: its file is checked before
        // the head is read, behind the first sweep's layers, so no logits come from a bad table.
        const int embed_file = checkpoint_.embed().tensors[0].file;
        if (u == units - 1 && needs_verifying(embed_file)) verify_file(embed_file, nullptr, nullptr);
        if (resident_[static_cast<size_t>(u)]) {
          if (!first_pass) continue;
          load(u, resident_buffers_[static_cast<size_t>(u)].data());
          std::lock_guard lock(mutex_);
          resident_weights_[static_cast<size_t>(u)] =
              unit_weights(checkpoint_.units[static_cast<size_t>(u)], layouts_[static_cast<size_t>(u)], resident_buffers_[static_cast<size_t>(u)].data());
          resident_ready_[static_cast<size_t>(u)] = true;
          changed_.notify_all();
          continue;
        }
        int slot;
        {
          std::unique_lock lock(mutex_);
          // Without prefetch, wait until the compute thread has released everything (serial reading).
          changed_.wait(lock, [&] {
            return stopping_ || (!free_slots_.empty() && (prefetch_ || (ready_slots_.empty() && in_use_ < 0)));
          });
          if (stopping_) return;
          slot = free_slots_.back();
          free_slots_.pop_back();
        }
        load(u, slots_[static_cast<size_t>(slot)].buffer.data());
        std::lock_guard lock(mutex_);
        slots_[static_cast<size_t>(slot)].unit = u;
        slots_[static_cast<size_t>(slot)].weights =
            unit_weights(checkpoint_.units[static_cast<size_t>(u)], layouts_[static_cast<size_t>(u)], slots_[static_cast<size_t>(slot)].buffer.data());
        ready_slots_.push_back(slot);
        changed_.notify_all();
      }
      if (!any_streamed) return;
    }
  } catch (const Error& error) {
    std::lock_guard lock(mutex_);
    read_error_ = error.what();  // handed to the compute thread at its next acquire
    changed_.notify_all();
  }
}

const UnitWeights& Streamer::acquire(int index) {
  double start = now_seconds();
  std::unique_lock lock(mutex_);
  const UnitWeights* found = nullptr;
  if (resident_[static_cast<size_t>(index)]) {
    changed_.wait(lock, [&] { return resident_ready_[static_cast<size_t>(index)] || !read_error_.empty(); });
    if (!read_error_.empty()) throw Error(read_error_);
    found = &resident_weights_[static_cast<size_t>(index)];
  } else {
    changed_.wait(lock, [&] { return !ready_slots_.empty() || !read_error_.empty(); });
    if (!read_error_.empty()) throw Error(read_error_);
    int slot = ready_slots_.front();
    if (slots_[static_cast<size_t>(slot)].unit != index)
      fail("internal error: unit " + std::to_string(index) + " acquired out of sweep order");
    ready_slots_.pop_front();
    in_use_ = slot;
    found = &slots_[static_cast<size_t>(slot)].weights;
  }
  const double waited = now_seconds() - start;
  stats_.wait_seconds += waited;
  stats_.wait_seconds_per_unit[static_cast<size_t>(index)] += waited;
  return *found;
}

void Streamer::release(int index) {
  if (resident_[static_cast<size_t>(index)]) return;
  {
    std::lock_guard lock(mutex_);
    free_slots_.push_back(in_use_);
    in_use_ = -1;
  }
  changed_.notify_all();
}

StreamStats Streamer::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

}  // namespace lw
