#include "common/system.h"

#include <sched.h>
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <utility>

#include "common/error.h"

namespace lw {
namespace {

// Reads "Key:   123 kB" from a /proc file; 0 when absent.
uint64_t read_proc_kib(const char* path, const std::string& key) {
  std::ifstream file(path);
  std::string line;
  while (std::getline(file, line)) {
    if (line.compare(0, key.size(), key) == 0 && line.size() > key.size() && line[key.size()] == ':') {
      std::istringstream rest(line.substr(key.size() + 1));
      uint64_t kib = 0;
      rest >> kib;
      return kib * 1024;
    }
  }
  return 0;
}

uint64_t read_number_file(const std::string& path) {
  std::ifstream file(path);
  std::string text;
  if (!(file >> text) || text == "max") return 0;
  try {
    return std::stoull(text);
  } catch (const std::exception&) {
    return 0;
  }
}

// The memory limit of this process's cgroup (v2 or v1), or 0 when there is none.
uint64_t cgroup_limit_bytes() {
  std::ifstream file("/proc/self/cgroup");
  std::string line;
  uint64_t limit = 0;
  while (std::getline(file, line)) {
    auto last = line.rfind(':');
    if (last == std::string::npos) continue;
    std::string controllers = line.substr(line.find(':') + 1, last - line.find(':') - 1);
    std::string group = line.substr(last + 1);
    uint64_t found = 0;
    if (controllers.empty()) found = read_number_file("/sys/fs/cgroup" + group + "/memory.max");
    else if (controllers.find("memory") != std::string::npos)
      found = read_number_file("/sys/fs/cgroup/memory" + group + "/memory.limit_in_bytes");
    if (found > 0 && found < (1ull << 60) && (limit == 0 || found < limit)) limit = found;
  }
  return limit;
}

// Whole CPUs the cgroup v2 quota of this process allows ("cpu.max": QUOTA PERIOD), or 0 for none.
int cgroup_cpu_quota() {
  std::ifstream file("/proc/self/cgroup");
  std::string line;
  while (std::getline(file, line)) {
    if (line.rfind("0::", 0) != 0) continue;
    std::ifstream max("/sys/fs/cgroup" + line.substr(3) + "/cpu.max");
    std::string quota;
    uint64_t period = 0;
    if (!(max >> quota >> period) || quota == "max" || period == 0) return 0;
    try {
      return static_cast<int>(std::max<uint64_t>(1, (std::stoull(quota) + period - 1) / period));
    } catch (const std::exception&) {
      return 0;
    }
  }
  return 0;
}

}  // namespace

int usable_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  int cores = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 0;
  if (cores <= 0) cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int quota = cgroup_cpu_quota();
  return quota > 0 ? std::min(cores, quota) : cores;
}

uint64_t current_rss_bytes() { return read_proc_kib("/proc/self/status", "VmRSS"); }
uint64_t peak_rss_bytes() { return read_proc_kib("/proc/self/status", "VmHWM"); }

uint64_t available_memory_bytes() {
  uint64_t available = read_proc_kib("/proc/meminfo", "MemAvailable");
  uint64_t limit = cgroup_limit_bytes();
  if (limit > 0) {
    uint64_t used = current_rss_bytes();
    uint64_t room = limit > used ? limit - used : 0;
    if (room < available) available = room;
  }
  return available;
}

double now_seconds() {
  using clock = std::chrono::steady_clock;
  return std::chrono::duration<double>(clock::now().time_since_epoch()).count();
}

MappedBuffer::MappedBuffer(size_t bytes) : size_(std::max<size_t>(bytes, 1)) {
  void* memory = mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (memory == MAP_FAILED) fail("out of memory: cannot map " + std::to_string(size_) + " bytes");
  constexpr size_t kHugePage = 2u << 20;
  if (size_ >= kHugePage) madvise(memory, size_, MADV_HUGEPAGE);  // advice only: ignored where THP is off
  data_ = static_cast<char*>(memory);
}

MappedBuffer::~MappedBuffer() {
  if (data_) munmap(data_, size_);
}

MappedBuffer::MappedBuffer(MappedBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

MappedBuffer& MappedBuffer::operator=(MappedBuffer&& other) noexcept {
  if (this != &other) {
    if (data_) munmap(data_, size_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

}  // namespace lw
