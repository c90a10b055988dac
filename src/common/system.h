// What the operating system tells us about memory, CPUs and time.
#pragma once
#include <cstddef>
#include <cstdint>

namespace lw {

uint64_t current_rss_bytes();  // VmRSS
uint64_t peak_rss_bytes();     // VmHWM: the kernel's high-water mark of resident memory
// Memory this process could still use: MemAvailable, capped by a cgroup limit if one is set.
uint64_t available_memory_bytes();
double now_seconds();  // monotonic
// CPUs this process may run on: its affinity mask, capped by a cgroup CPU quota if one is set.
int usable_cores();

// A large buffer mapped straight from the kernel, zero-filled, and where it spans 2 MiB or more
// asked to be backed by transparent huge pages: gigabytes of weights then cost a few thousand
// page faults instead of hundreds of thousands (each of which a VM makes dearer). Move-only.
class MappedBuffer {
 public:
  MappedBuffer() = default;
  explicit MappedBuffer(size_t bytes);  // fails with a message when the memory is not there
  ~MappedBuffer();
  MappedBuffer(MappedBuffer&& other) noexcept;
  MappedBuffer& operator=(MappedBuffer&& other) noexcept;
  MappedBuffer(const MappedBuffer&) = delete;
  MappedBuffer& operator=(const MappedBuffer&) = delete;
  char* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  char* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace lw
