// A file opened for reading, closed on scope exit, with reads that either deliver every byte
// asked for or throw lw::Error naming the file.
#pragma once
#include <cstdint>
#include <string>

namespace lw {

class File {
 public:
  explicit File(const std::string& path);  // opens read-only; throws if it cannot
  ~File();
  File(File&& other) noexcept;
  File(const File&) = delete;
  File& operator=(const File&) = delete;
  File& operator=(File&&) = delete;

  uint64_t size() const;
  void read_at(void* buffer, uint64_t bytes, uint64_t offset) const;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
};

// The whole file as bytes; throws lw::Error naming it when it cannot be read.
std::string read_file_text(const std::string& path);

}  // namespace lw
