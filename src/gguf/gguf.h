// GGUF files (llama.cpp's format): the header — metadata key/value pairs and tensor infos —
// read with bounded reads and validated before anything is allocated. Tensor data is never read
// here; each tensor info says where its bytes lie so a loader can pread them later.
//
// Layout (little-endian, versions 2 and 3; version 1 used 32-bit counts and is refused):
//   "GGUF" | u32 version | u64 tensor_count | u64 kv_count
//   kv_count x  { string key | u32 value_type | value }
//   tensor_count x { string name | u32 n_dims | u64 dims[n_dims] | u32 ggml_type | u64 offset }
//   padding to general.alignment (default 32) | tensor data (offsets are relative to its start)
// where a string is u64 length + bytes, and an array value is u32 element_type + u64 count +
// elements (arrays may nest).
//
// Every failure is an lw::Error "PATH: problem" (wrong magic, unsupported version, truncated
// file, counts that cannot fit in the file, bad type ids, tensors outside the file ...).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace lw {

// Metadata value types, numbered as in the file.
enum class GgufType : uint32_t {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12,
};
inline constexpr uint32_t kGgufTypeCount = 13;

// "uint32", "string", "array" ...; "type N" for a number that is not a type.
std::string gguf_type_name(GgufType type);
// Bytes one scalar of this type takes in the file (0 for STRING and ARRAY).
size_t gguf_scalar_size(GgufType type);

// An array value. Elements are kept compactly according to element_type: numbers and bools in
// `raw` exactly as stored (little-endian, gguf_scalar_size(element_type) bytes each), strings in
// `strings`, nested arrays in `arrays`. Use the typed accessors rather than `raw` directly.
struct GgufArray {
  GgufType element_type = GgufType::UINT8;
  uint64_t count = 0;
  std::vector<uint8_t> raw;
  std::vector<std::string> strings;
  std::vector<GgufArray> arrays;

  bool is_integer() const;  // element type is one of the 8 integer types
  bool is_float() const;    // FLOAT32 or FLOAT64
  // Element i as a number (integer, float or bool element types only; i < count).
  int64_t int_at(uint64_t i) const;      // UINT64 values above INT64_MAX are clamped: check uint_at
  uint64_t uint_at(uint64_t i) const;    // negative values wrap: check int_at
  double float_at(uint64_t i) const;     // any numeric element type, converted
};

// One metadata value: `type` says which member holds it. Integers keep their exact file type in
// `type`; the value is in `u` (unsigned types, BOOL as 0/1) or `i` (signed types).
struct GgufValue {
  GgufType type = GgufType::UINT8;
  uint64_t u = 0;
  int64_t i = 0;
  double f = 0.0;  // FLOAT32 (widened exactly) and FLOAT64
  bool b = false;
  std::string string;
  GgufArray array;

  bool is_integer() const;
  bool is_float() const;
};

struct GgufKeyValue {
  std::string key;
  GgufValue value;
};

// Sizes of the ggml tensor types, as the gguf Python package's GGML_QUANT_SIZES: a tensor of
// type T holds ne[0] x ne[1] x ... elements in blocks of `block_size` elements, each block
// `type_size` bytes; ne[0] must be a multiple of block_size.
struct GgmlTypeInfo {
  uint32_t id;
  const char* name;  // "F32", "Q4_K", ...
  uint32_t block_size;
  uint32_t type_size;
};
// nullptr for a type number this reader does not know.
const GgmlTypeInfo* ggml_type_info(uint32_t type);
// Bytes that `elements` values of a ggml type occupy (elements must be a multiple of the block
// size). Works for every type ggml_type_info knows; throws lw::Error for an unknown type, a count
// that is not a multiple of the block size, or a size that overflows.
uint64_t ggml_row_bytes(uint32_t ggml_type, uint64_t elements);
// "Q4_K", or "unknown ggml type 33" for a number this reader does not know.
std::string ggml_type_name(uint32_t type);

struct GgufTensorInfo {
  std::string name;
  std::vector<uint64_t> dims;  // ggml order: dims[0] is the fastest-varying (row length)
  uint32_t type = 0;           // ggml type number as stored
  bool known_type = false;     // false: a type number this reader does not know (see type_name())
  uint64_t offset = 0;         // relative to the start of the data section, as stored
  uint64_t file_offset = 0;    // absolute: data_offset + offset
  uint64_t bytes = 0;          // size of the data; 0 when !known_type (unknown)

  uint64_t elements() const;   // product of dims (1 for no dims)
  std::string type_name() const { return ggml_type_name(type); }
};

class GgufFile {
 public:
  struct Options {
    // The header region (everything before the tensor data) may not be larger than this: real
    // files hold a few MiB of metadata, so a file claiming more is refused before memory grows.
    uint64_t max_header_bytes = uint64_t{256} << 20;
    // Arrays nested deeper than this are refused.
    uint32_t max_array_depth = 8;
  };

  // Reads and validates the header of the GGUF file at `path`. Throws lw::Error.
  static GgufFile open(const std::string& path);
  static GgufFile open(const std::string& path, const Options& options);

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t file_bytes() const { return file_bytes_; }
  uint64_t header_bytes() const { return header_bytes_; }  // where the tensor infos end
  uint64_t alignment() const { return alignment_; }        // general.alignment or 32
  uint64_t data_offset() const { return data_offset_; }    // header_bytes rounded up to alignment

  // Metadata in file order.
  const std::vector<GgufKeyValue>& metadata() const { return metadata_; }
  std::vector<std::string> keys() const;
  bool has(std::string_view key) const { return find(key) != nullptr; }
  const GgufValue* find(std::string_view key) const;  // nullptr when absent

  // Typed accessors: throw lw::Error naming the file and the key when the key is missing or
  // holds another type. Integers are accepted from any integer type whose value fits.
  const std::string& get_string(std::string_view key) const;
  uint64_t get_uint(std::string_view key) const;
  int64_t get_int(std::string_view key) const;
  double get_float(std::string_view key) const;  // FLOAT32 / FLOAT64
  bool get_bool(std::string_view key) const;
  const GgufArray& get_array(std::string_view key) const;
  const std::vector<std::string>& get_array_strings(std::string_view key) const;
  std::vector<double> get_array_floats(std::string_view key) const;  // float or integer elements
  std::vector<int64_t> get_array_ints(std::string_view key) const;   // integer elements

  // Optional lookups: nullopt when the key is absent; lw::Error when it holds another type.
  std::optional<std::string> find_string(std::string_view key) const;
  std::optional<uint64_t> find_uint(std::string_view key) const;
  std::optional<int64_t> find_int(std::string_view key) const;
  std::optional<double> find_float(std::string_view key) const;
  std::optional<bool> find_bool(std::string_view key) const;

  // Tensor infos in file order.
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* find_tensor(std::string_view name) const;

 private:
  friend class GgufParser;
  GgufFile() = default;
  [[noreturn]] void key_error(std::string_view key, const std::string& problem) const;
  const GgufValue& require(std::string_view key) const;

  std::string path_;
  uint32_t version_ = 0;
  uint64_t file_bytes_ = 0;
  uint64_t header_bytes_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<GgufKeyValue> metadata_;
  std::unordered_map<std::string, size_t> key_index_;
  std::vector<GgufTensorInfo> tensors_;
  std::unordered_map<std::string, size_t> tensor_index_;
};

}  // namespace lw
