// A small fixed thread pool for the CPU kernels: the caller takes part in the work, tasks
// are claimed from an atomic counter, and idle workers sleep (no busy spinning on a
// machine the engine shares with Node's event loop).
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace kvc::cpu {

class ThreadPool {
 public:
  // threads: total participants including the caller (>= 1).
  explicit ThreadPool(uint32_t threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  uint32_t size() const { return static_cast<uint32_t>(workers_.size()) + 1; }
  // Runs fn(task, participant) for every task in [0, tasks); returns when all are done.
  void run(uint32_t tasks, const std::function<void(uint32_t, uint32_t)>& fn);

 private:
  void workerLoop(uint32_t participant);
  void drain(uint32_t participant);

  std::vector<std::thread> workers_;
  std::mutex runMutex_;  // one job at a time
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  uint64_t generation_ = 0;
  bool stopping_ = false;
  const std::function<void(uint32_t, uint32_t)>* job_ = nullptr;
  uint32_t tasks_ = 0;
  std::atomic<uint32_t> next_{0};
  uint32_t busyWorkers_ = 0;
};

}  // namespace kvc::cpu
