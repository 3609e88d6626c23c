// JS class NativeSequence: one sequence of a cache, addressed by id; every method checks
// that the cache is alive and the sequence not freed (DISPOSED otherwise).
#pragma once
#include <napi.h>

#include <memory>

#include "cache_handle.h"
#include "guard.h"

namespace kvc::binding {

class SequenceWrap : public Napi::ObjectWrap<SequenceWrap> {
 public:
  static Napi::Function define(Napi::Env env);
  static Napi::Object create(Napi::Env env, std::shared_ptr<CacheHandle> handle, uint64_t id);
  explicit SequenceWrap(const Napi::CallbackInfo& info);
  ~SequenceWrap() override;

  uint64_t id() const { return id_; }
  CacheHandle* handle() const { return handle_.get(); }
  std::shared_ptr<CacheHandle> sharedHandle() const { return handle_; }
  // The live cache, or a DISPOSED error thrown into JavaScript.
  Cache& live(Napi::Env env);
  // Argument i as a NativeSequence (INVALID_ARGUMENT otherwise).
  static SequenceWrap* fromArg(const Napi::CallbackInfo& info, size_t i);

 private:
  KVC_GUARDED_METHODS(SequenceWrap)
  Napi::Value append(const Napi::CallbackInfo& info);
  Napi::Value attention(const Napi::CallbackInfo& info);
  Napi::Value length(const Napi::CallbackInfo& info);
  Napi::Value lengths(const Napi::CallbackInfo& info);
  Napi::Value nextPosition(const Napi::CallbackInfo& info);
  Napi::Value fork(const Napi::CallbackInfo& info);
  Napi::Value truncate(const Napi::CallbackInfo& info);
  Napi::Value free(const Napi::CallbackInfo& info);
  Napi::Value read(const Napi::CallbackInfo& info);
  Napi::Value exportBytes(const Napi::CallbackInfo& info);
  Napi::Value isFreed(const Napi::CallbackInfo& info);
  Napi::Value resetScores(const Napi::CallbackInfo& info);
  Napi::Value sparseSelection(const Napi::CallbackInfo& info);  // sparse_binding.cpp
  // Low-rank bases (lowrank_binding.cpp).
  Napi::Value fitBases(const Napi::CallbackInfo& info);
  Napi::Value setBases(const Napi::CallbackInfo& info);
  Napi::Value bases(const Napi::CallbackInfo& info);

  std::shared_ptr<CacheHandle> handle_;
  uint64_t id_ = 0;
};

}  // namespace kvc::binding
