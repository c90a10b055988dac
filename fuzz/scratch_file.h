// One file for a whole fuzzing run, rewritten for every input, so targets exercise the real
// open-and-read path of their parser: creating a file per input would cost more than the parse.
// A memfd reopened through /proc/self/fd; a temporary file where that is unavailable.
#pragma once
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

struct ScratchFile {
  int fd = -1;
  std::string path;
  bool remove_at_exit = false;
  explicit ScratchFile(const char* name) {
    fd = memfd_create(name, MFD_CLOEXEC);
    if (fd >= 0) {
      path = "/proc/self/fd/" + std::to_string(fd);
      if (access(path.c_str(), R_OK) == 0) return;
      close(fd);
    }
    const char* dir = std::getenv("TMPDIR");
    path = std::string(dir && *dir ? dir : "/tmp") + "/" + name + "_XXXXXX";
    fd = mkstemp(path.data());
    if (fd < 0) {
      std::perror("cannot create a scratch file");
      std::abort();
    }
    remove_at_exit = true;
  }
  ~ScratchFile() {
    if (remove_at_exit) unlink(path.c_str());
    close(fd);
  }
  ScratchFile(const ScratchFile&) = delete;
  ScratchFile& operator=(const ScratchFile&) = delete;
  void write(const uint8_t* data, size_t size) const {
    if (ftruncate(fd, 0) != 0) std::abort();
    size_t done = 0;
    while (done < size) {
      ssize_t n = pwrite(fd, data + done, size - done, static_cast<off_t>(done));
      if (n <= 0) std::abort();
      done += static_cast<size_t>(n);
    }
  }
};
