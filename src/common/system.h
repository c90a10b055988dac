// What the operating system tells us about memory and time.
#pragma once
#include <cstdint>

namespace lw {

uint64_t current_rss_bytes();  // VmRSS
uint64_t peak_rss_bytes();     // VmHWM: the kernel's high-water mark of resident memory
// Memory this process could still use: MemAvailable, capped by a cgroup limit if one is set.
uint64_t available_memory_bytes();
double now_seconds();  // monotonic

}  // namespace lw
