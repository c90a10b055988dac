#include "common/file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/error.h"

namespace lw {

File::File(const std::string& path) : path_(path), fd_(open(path.c_str(), O_RDONLY | O_CLOEXEC)) {
  if (fd_ < 0) fail(path, std::string("cannot open: ") + std::strerror(errno));
  posix_fadvise(fd_, 0, 0, POSIX_FADV_SEQUENTIAL);
}

File::File(File&& other) noexcept : path_(std::move(other.path_)), fd_(other.fd_) { other.fd_ = -1; }

File::~File() {
  if (fd_ >= 0) close(fd_);
}

uint64_t File::size() const {
  struct stat info {};
  if (fstat(fd_, &info) != 0) fail(path_, std::string("cannot stat: ") + std::strerror(errno));
  return static_cast<uint64_t>(info.st_size);
}

void File::read_at(void* buffer, uint64_t bytes, uint64_t offset) const {
  auto* out = static_cast<char*>(buffer);
  while (bytes > 0) {
    ssize_t got = pread(fd_, out, bytes, static_cast<off_t>(offset));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) fail(path_, std::string("read failed: ") + std::strerror(errno));
    if (got == 0) fail(path_, "file is truncated (ended while reading)");
    out += got;
    bytes -= static_cast<uint64_t>(got);
    offset += static_cast<uint64_t>(got);
  }
}

std::string read_file_text(const std::string& path) {
  const File file(path);
  std::string text(file.size(), '\0');
  file.read_at(text.data(), text.size(), 0);
  return text;
}

}  // namespace lw
