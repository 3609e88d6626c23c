// Runs the row blocks of one stream on a thread pool, or inline when there is none (a
// stream that already runs inside a pool task of a batch). Callers allocate per-participant
// scratch before forEach so that nothing inside a task allocates or throws.
#pragma once
#include <cstdint>
#include <functional>

#include "../thread_pool.h"

namespace kvc::compaction {

class Parallel {
 public:
  explicit Parallel(cpu::ThreadPool* pool) : pool_(pool) {}
  uint32_t participants() const { return pool_ ? pool_->size() : 1; }
  template <class F>
  void forEach(uint32_t tasks, F&& fn) {
    if (!pool_ || tasks <= 1 || pool_->size() == 1) {
      for (uint32_t t = 0; t < tasks; ++t) fn(t, 0u);
      return;
    }
    pool_->run(tasks, std::function<void(uint32_t, uint32_t)>(fn));
  }

 private:
  cpu::ThreadPool* pool_;
};

}  // namespace kvc::compaction
