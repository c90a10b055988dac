#include "common/progress.h"

#include <unistd.h>

#include <cstdio>

#include "common/system.h"

namespace lw {

Progress::Progress(std::string label, uint64_t total, bool quiet)
    : label_(std::move(label)), total_(total), enabled_(!quiet && isatty(STDERR_FILENO)), start_(now_seconds()) {}

Progress::~Progress() { finish(); }

void Progress::update(uint64_t done, const std::string& detail) {
  if (!enabled_) return;
  double now = now_seconds();
  if (done < total_ && now - last_draw_ < 0.1) return;  // redraw at most 10 times a second
  last_draw_ = now;
  double percent = total_ ? 100.0 * static_cast<double>(done) / static_cast<double>(total_) : 100.0;
  std::fprintf(stderr, "\r\033[K%s %llu/%llu (%.0f%%, %.1f s) %s", label_.c_str(),
               static_cast<unsigned long long>(done), static_cast<unsigned long long>(total_), percent,
               now - start_, detail.c_str());
  std::fflush(stderr);
  drawn_ = true;
}

void Progress::finish() {
  if (enabled_ && drawn_) std::fprintf(stderr, "\n");
  drawn_ = false;
}

}  // namespace lw
