// A small fixed thread pool for the CPU kernels: the caller takes part in the work, tasks
// are claimed from an atomic counter, and idle workers sleep (no busy spinning on a
// machine the engine shares with Node's event loop). run() returns when every task is done,
// not when every worker has woken: a worker that is slow to wake (its core busy with another
// thread, such as a background compaction) costs the call nothing, because the caller takes
// the tasks it has not claimed. Starting threads can fail (a process or memory limit): the
// pool never throws, it joins what it started and reports a Status.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "kvc/status.h"

namespace kvc::cpu {

class ThreadPool {
 public:
  // threads: total participants including the caller (0 counts as 1). OUT_OF_MEMORY when a
  // thread could not be started; *out is then left empty and no thread is left running.
  static Status create(uint32_t threads, std::unique_ptr<ThreadPool>* out);

  // Prefer create(). Never throws: when a thread cannot be started, the ones already started
  // are stopped and joined, status() says why and the pool runs everything on the caller.
  explicit ThreadPool(uint32_t threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  const Status& status() const { return status_; }
  uint32_t size() const { return static_cast<uint32_t>(workers_.size()) + 1; }
  // Runs fn(task, participant) for every task in [0, tasks); returns when all are done.
  void run(uint32_t tasks, const std::function<void(uint32_t, uint32_t)>& fn);

 private:
  void workerLoop(uint32_t participant);
  // Claims and runs tasks of job `generation` until none is left (a claim carries the job's
  // generation, so a worker that woke for an older job never runs a newer job's task).
  void drain(uint32_t generation, const std::function<void(uint32_t, uint32_t)>& job, uint32_t tasks, uint32_t participant);
  void stopAll() noexcept;

  std::vector<std::thread> workers_;
  Status status_;
  std::mutex runMutex_;  // one job at a time
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  uint64_t generation_ = 0;
  bool stopping_ = false;
  const std::function<void(uint32_t, uint32_t)>* job_ = nullptr;
  uint32_t tasks_ = 0;
  std::atomic<uint64_t> claim_{0};     // (generation << 32) | next unclaimed task of the current job
  std::atomic<uint32_t> finished_{0};  // tasks of the current job that have returned
};

}  // namespace kvc::cpu
