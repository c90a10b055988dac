#include "backend/thread_pool.h"

#include "common/system.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace lw {
namespace {

constexpr int kSpinIterations = 20000;  // about 50-100 microseconds before sleeping

inline void pause() {
#if defined(__x86_64__)
  _mm_pause();
#endif
}

}  // namespace

ThreadPool::ThreadPool(int threads) : spin_iterations_(threads <= usable_cores() ? kSpinIterations : 0) {
  for (int i = 1; i < threads; i++) workers_.emplace_back([this, i] { worker(i); });
}

ThreadPool::~ThreadPool() {
  stopping_.store(true);
  generation_.fetch_add(1);
  generation_.notify_all();
  for (auto& thread : workers_) thread.join();
}

void ThreadPool::run_chunk(int index) {
  const int64_t parts = size();
  const int64_t units = (job_size_ + job_grain_ - 1) / job_grain_;
  const int64_t begin = std::min(job_size_, units * index / parts * job_grain_);
  const int64_t end = std::min(job_size_, units * (index + 1) / parts * job_grain_);
  if (begin < end) (*job_)(begin, end, index);
}

void ThreadPool::worker(int index) {
  uint64_t seen = 0;
  while (true) {
    uint64_t now = generation_.load(std::memory_order_acquire);
    for (int spin = 0; now == seen && spin < spin_iterations_; spin++) {
      pause();
      now = generation_.load(std::memory_order_acquire);
    }
    if (now == seen) {
      generation_.wait(seen, std::memory_order_acquire);
      continue;
    }
    seen = now;
    if (stopping_.load()) return;
    run_chunk(index);
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) pending_.notify_one();
  }
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t, int64_t, int)>& fn, int64_t grain) {
  if (n <= 0) return;
  if (workers_.empty() || n <= grain) {
    fn(0, n, 0);
    return;
  }
  job_ = &fn;
  job_size_ = n;
  job_grain_ = grain;
  pending_.store(static_cast<int>(workers_.size()), std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_release);
  generation_.notify_all();
  run_chunk(0);
  for (int spin = 0; pending_.load(std::memory_order_acquire) != 0 && spin < spin_iterations_; spin++) pause();
  for (int left = pending_.load(std::memory_order_acquire); left != 0; left = pending_.load(std::memory_order_acquire))
    pending_.wait(left, std::memory_order_acquire);
  job_ = nullptr;
}

}  // namespace lw
