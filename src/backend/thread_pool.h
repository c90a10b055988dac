// A small pool of compute threads. Work is split into contiguous static chunks (so results do
// not depend on timing); idle workers spin briefly for the next job, then sleep, so they neither
// burn a core the reader thread needs nor add wake-up latency between back-to-back kernels. A
// pool with more threads than the process has cores never spins: a spinning thread would hold
// the core that the thread it waits for needs.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <thread>
#include <vector>

namespace lw {

class ThreadPool {
 public:
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }
  // Calls fn(begin, end, thread) on disjoint chunks covering [0, n); the caller runs chunk 0.
  // Chunk boundaries are multiples of `grain`.
  void parallel_for(int64_t n, const std::function<void(int64_t, int64_t, int)>& fn, int64_t grain = 1);

 private:
  void worker(int index);
  void run_chunk(int index);

  const int spin_iterations_;
  std::vector<std::thread> workers_;
  const std::function<void(int64_t, int64_t, int)>* job_ = nullptr;
  int64_t job_size_ = 0, job_grain_ = 1;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stopping_{false};
};

}  // namespace lw
