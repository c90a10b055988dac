// Helpers for the GGUF tests: a byte-level GGUF writer (so tests can build valid and broken files
// field by field) and temporary files.
#pragma once
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace lw::gguf_test {

inline std::string source_dir() { return LW_SOURCE_DIR; }
inline std::string shared_vocab_dir() { return std::string(LW_SOURCE_DIR) + "/../shared/vocab"; }
inline std::string vocab_path(const std::string& name) { return shared_vocab_dir() + "/ggml-vocab-" + name + ".gguf"; }

// GGUF bytes, appended field by field (little-endian).
class Bytes {
 public:
  std::string data;

  template <typename T>
  Bytes& raw(T value) {
    char buffer[sizeof(T)];
    std::memcpy(buffer, &value, sizeof(T));
    data.append(buffer, sizeof(T));
    return *this;
  }
  Bytes& u8(uint8_t v) { return raw(v); }
  Bytes& i8(int8_t v) { return raw(v); }
  Bytes& u16(uint16_t v) { return raw(v); }
  Bytes& i16(int16_t v) { return raw(v); }
  Bytes& u32(uint32_t v) { return raw(v); }
  Bytes& i32(int32_t v) { return raw(v); }
  Bytes& u64(uint64_t v) { return raw(v); }
  Bytes& i64(int64_t v) { return raw(v); }
  Bytes& f32(float v) { return raw(v); }
  Bytes& f64(double v) { return raw(v); }
  Bytes& str(const std::string& s) {
    u64(s.size());
    data += s;
    return *this;
  }
  Bytes& bytes(const std::string& s) {
    data += s;
    return *this;
  }
  Bytes& header(uint32_t version, uint64_t tensors, uint64_t kvs) {
    data += "GGUF";
    return u32(version).u64(tensors).u64(kvs);
  }
  // A key followed by its value type (the value comes next).
  Bytes& key(const std::string& name, uint32_t type) { return str(name).u32(type); }
  Bytes& pad_to(uint64_t alignment) {
    while (data.size() % alignment) data += '\0';
    return *this;
  }
  Bytes& zeros(size_t n) {
    data.append(n, '\0');
    return *this;
  }
  size_t size() const { return data.size(); }
};

// A file under the test's temporary directory, removed at the end of the test.
class TempFile {
 public:
  explicit TempFile(const std::string& contents, const std::string& name = "test.gguf") {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string base = std::string(info->test_suite_name()) + "." + info->name();
    for (char& c : base)
      if (c == '/') c = '_';
    path_ = (std::filesystem::path(::testing::TempDir()) /
             ("lw-gguf-" + std::to_string(getpid()) + "-" + base + "-" + std::to_string(counter()++) + "-" + name))
                .string();
    write(contents);
  }
  ~TempFile() {
    std::error_code ignored;
    std::filesystem::remove(path_, ignored);
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  void write(const std::string& contents) const {
    std::ofstream out(path_, std::ios::binary | std::ios::trunc);
    out.write(contents.data(), static_cast<std::streamsize>(contents.size()));
  }
  const std::string& path() const { return path_; }

 private:
  static int& counter() {
    static int n = 0;
    return n;
  }
  std::string path_;
};

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

}  // namespace lw::gguf_test
