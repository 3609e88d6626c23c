// JS class NativeCache: owns the core cache through a handle its sequences share.
#pragma once
#include <napi.h>

#include <memory>
#include <vector>

#include "cache_handle.h"
#include "guard.h"

namespace kvc::binding {

class CacheWrap : public Napi::ObjectWrap<CacheWrap> {
 public:
  static Napi::Function define(Napi::Env env);
  explicit CacheWrap(const Napi::CallbackInfo& info);

 private:
  KVC_GUARDED_METHODS(CacheWrap)
  Cache& live(Napi::Env env);
  Napi::Value createSequence(const Napi::CallbackInfo& info);
  Napi::Value importSequence(const Napi::CallbackInfo& info);
  // Incremental import of chunk payloads (chunk_import_binding.cpp).
  Napi::Value beginChunkImport(const Napi::CallbackInfo& info);
  Napi::Value chunkImportAdd(const Napi::CallbackInfo& info);
  Napi::Value chunkImportFinish(const Napi::CallbackInfo& info);
  Napi::Value chunkImportAbort(const Napi::CallbackInfo& info);
  Napi::Value attentionBatch(const Napi::CallbackInfo& info);
  Napi::Value stats(const Napi::CallbackInfo& info);
  Napi::Value trimWorkspace(const Napi::CallbackInfo& info);
  Napi::Value dispose(const Napi::CallbackInfo& info);

  std::shared_ptr<CacheHandle> handle_;
  std::vector<uint64_t> batchIds_, sortedIds_;
};

}  // namespace kvc::binding
