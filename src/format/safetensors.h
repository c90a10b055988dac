// The safetensors file format: an 8-byte little-endian header length, a JSON header, then data.
// https://github.com/huggingface/safetensors (format section). Parsing trusts nothing in the file.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "format/dtype.h"

namespace lw {

struct SafetensorsTensor {
  std::string name;
  std::string dtype_name;         // as written in the file, e.g. "BF16", "I64"
  size_t element_size = 0;        // bytes per element of dtype_name; 0 for the block types of a split
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;    // byte range within the data section
  uint64_t elements() const;
};

struct SafetensorsHeader {
  std::vector<SafetensorsTensor> tensors;  // sorted by begin
  std::map<std::string, std::string> metadata;
  const SafetensorsTensor* find(const std::string& name) const;
};

// Validates everything: JSON shape, known dtypes, sizes that match shapes, offsets inside the
// data section and not overlapping. Errors name `path`.
SafetensorsHeader parse_safetensors_header(std::string_view json, uint64_t data_bytes, const std::string& path);

struct SafetensorsFile {
  std::string path;
  uint64_t file_bytes = 0;
  uint64_t data_offset = 0;  // absolute offset of the data section
  SafetensorsHeader header;
};

// Reads and validates only the header (a few KiB to MiB), never the tensor data.
SafetensorsFile open_safetensors(const std::string& path);

struct TensorSpec {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  uint64_t bytes() const;
};

// Writes a safetensors file whose data section starts on a 4 KiB boundary and whose tensors
// start on 64-byte boundaries, so one sequential (or O_DIRECT) read fetches it whole. The file
// appears under its final name only after commit(): it is written as PATH.tmp, synced, renamed.
class SafetensorsWriter {
 public:
  SafetensorsWriter(std::string path, std::vector<TensorSpec> tensors,
                    const std::map<std::string, std::string>& metadata = {});
  ~SafetensorsWriter();  // removes the temporary file if commit() was not reached
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  // Tensor data in the order given to the constructor, in pieces of any size: a large tensor
  // never has to be in memory at once. Padding between tensors is inserted here.
  void append(const void* data, uint64_t bytes);
  struct Result {
    uint64_t bytes;
    uint64_t xxh3;  // XXH3-64 of the whole file
  };
  Result commit();

 private:
  void write_bytes(const void* data, size_t size);
  std::string path_, temp_path_;
  std::vector<TensorSpec> tensors_;
  std::vector<uint64_t> offsets_;
  size_t next_ = 0;            // tensor being written
  uint64_t next_written_ = 0;  // bytes of it written so far
  uint64_t written_ = 0;
  int fd_ = -1;
  void* hash_state_ = nullptr;
};

}  // namespace lw
