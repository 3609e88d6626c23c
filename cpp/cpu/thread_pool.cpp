// See thread_pool.h.
#include "thread_pool.h"

#include "kvc/thread_locals.h"

#include <new>
#include <string>
#include <system_error>

namespace kvc::cpu {

Status ThreadPool::create(uint32_t threads, std::unique_ptr<ThreadPool>* out) {
  out->reset();
  std::unique_ptr<ThreadPool> pool(new (std::nothrow) ThreadPool(threads));
  if (!pool) return outOfMemory("could not allocate a thread pool");
  if (!pool->status().isOk()) return pool->status();
  *out = std::move(pool);
  return Status::ok();
}

ThreadPool::ThreadPool(uint32_t threads) {
  const uint32_t wanted = threads > 1 ? threads - 1 : 0;
  try {
    workers_.reserve(wanted);
    // A std::thread that fails to start throws before it is added, so workers_ only ever
    // holds joinable threads.
    for (uint32_t i = 1; i <= wanted; ++i) workers_.emplace_back([this, i] { workerLoop(i); });
  } catch (const std::system_error& e) {
    status_ = outOfMemory("could not start thread " + std::to_string(workers_.size() + 1) + " of " +
                          std::to_string(wanted) + " (" + e.what() +
                          "; a limit on processes / threads per user, or on memory?)");
  } catch (const std::bad_alloc&) {
    status_ = outOfMemory("out of host memory while starting " + std::to_string(wanted) + " threads");
  }
  if (!status_.isOk()) stopAll();
}

ThreadPool::~ThreadPool() { stopAll(); }

void ThreadPool::stopAll() noexcept {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (std::thread& t : workers_) {
    if (t.joinable()) t.join();
  }
  workers_.clear();
}

void ThreadPool::drain(uint32_t generation, const std::function<void(uint32_t, uint32_t)>& job, uint32_t tasks,
                       uint32_t participant) {
  uint64_t c = claim_.load(std::memory_order_acquire);
  while (static_cast<uint32_t>(c >> 32) == generation && static_cast<uint32_t>(c) < tasks) {
    if (!claim_.compare_exchange_weak(c, c + 1, std::memory_order_acq_rel, std::memory_order_acquire)) continue;
    job(static_cast<uint32_t>(c), participant);
    // The last task to return wakes the caller (it may be waiting for tasks other threads took).
    if (finished_.fetch_add(1, std::memory_order_acq_rel) + 1 == tasks) {
      std::lock_guard<std::mutex> lock(mutex_);
      done_.notify_all();
    }
    c = claim_.load(std::memory_order_acquire);
  }
}

void ThreadPool::run(uint32_t tasks, const std::function<void(uint32_t, uint32_t)>& fn) {
  if (tasks == 0) return;
  if (workers_.empty() || tasks == 1) {
    for (uint32_t t = 0; t < tasks; ++t) fn(t, 0);
    return;
  }
  std::lock_guard<std::mutex> runLock(runMutex_);
  uint32_t generation;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    job_ = &fn;
    tasks_ = tasks;
    generation = static_cast<uint32_t>(++generation_);
    finished_.store(0, std::memory_order_relaxed);
    claim_.store(static_cast<uint64_t>(generation) << 32, std::memory_order_release);
  }
  wake_.notify_all();
  drain(generation, fn, tasks, 0);
  // Every task is claimed; wait for the ones other threads are still running. A worker that
  // has not woken yet finds nothing to claim and goes back to sleep.
  std::unique_lock<std::mutex> lock(mutex_);
  done_.wait(lock, [&] { return finished_.load(std::memory_order_acquire) == tasks; });
  job_ = nullptr;
}

void ThreadPool::workerLoop(uint32_t participant) {
  reserveThreadLocals();
  uint64_t seen = 0;
  for (;;) {
    const std::function<void(uint32_t, uint32_t)>* job;
    uint32_t tasks;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
      if (stopping_) return;
      seen = generation_;
      job = job_;
      tasks = tasks_;
    }
    // job_ is cleared once the job's tasks are all done: then there is nothing to claim.
    if (job != nullptr) drain(static_cast<uint32_t>(seen), *job, tasks, participant);
  }
}

}  // namespace kvc::cpu
