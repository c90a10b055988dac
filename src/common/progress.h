// One-line progress on stderr, only when stderr is a terminal and the user did not ask for quiet.
#pragma once
#include <cstdint>
#include <string>

namespace lw {

class Progress {
 public:
  Progress(std::string label, uint64_t total, bool quiet);
  ~Progress();
  void update(uint64_t done, const std::string& detail = "");
  void finish();

 private:
  std::string label_;
  uint64_t total_;
  bool enabled_;
  double start_;
  double last_draw_ = 0;
  bool drawn_ = false;
};

}  // namespace lw
