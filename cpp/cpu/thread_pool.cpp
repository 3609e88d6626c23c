// See thread_pool.h.
#include "thread_pool.h"

namespace kvc::cpu {

ThreadPool::ThreadPool(uint32_t threads) {
  for (uint32_t i = 1; i < threads; ++i) workers_.emplace_back([this, i] { workerLoop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void ThreadPool::drain(uint32_t participant) {
  for (uint32_t task; (task = next_.fetch_add(1, std::memory_order_relaxed)) < tasks_;) (*job_)(task, participant);
}

void ThreadPool::run(uint32_t tasks, const std::function<void(uint32_t, uint32_t)>& fn) {
  if (tasks == 0) return;
  if (workers_.empty() || tasks == 1) {
    for (uint32_t t = 0; t < tasks; ++t) fn(t, 0);
    return;
  }
  std::lock_guard<std::mutex> runLock(runMutex_);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    job_ = &fn;
    tasks_ = tasks;
    next_.store(0, std::memory_order_relaxed);
    busyWorkers_ = static_cast<uint32_t>(workers_.size());
    ++generation_;
  }
  wake_.notify_all();
  drain(0);
  std::unique_lock<std::mutex> lock(mutex_);
  done_.wait(lock, [this] { return busyWorkers_ == 0; });
  job_ = nullptr;
}

void ThreadPool::workerLoop(uint32_t participant) {
  uint64_t seen = 0;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
      if (stopping_) return;
      seen = generation_;
    }
    drain(participant);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (--busyWorkers_ == 0) done_.notify_one();
    }
  }
}

}  // namespace kvc::cpu
