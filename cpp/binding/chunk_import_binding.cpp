// NativeCache methods of the incremental import (core/chunk_import.h), for PrefixStore loads
// that import chunk entries as they arrive:
//   beginChunkImport(prelude, rows: Uint32Array) -> an opaque import (External) holding the blocks;
//   chunkImportAdd(import, chunk, frame, payloadAt): checks the frame's CRC-32 and the rows and
//     writes them (CORRUPT_DATA fails the import: its blocks go back);
//   chunkImportFinish(import) -> NativeSequence; chunkImportAbort(import): gives the blocks back.
// An import dropped without either is aborted by the garbage collector (or forgotten when its
// cache was disposed first: the blocks went with the cache).
#include <memory>

#include "../core/chunk_import.h"
#include "args.h"
#include "cache_wrap.h"
#include "errors.h"
#include "sequence_wrap.h"

namespace kvc::binding {

namespace {

inline constexpr napi_type_tag kChunkImportTag = {0x6b7663636869ull, 0x5e3a9c1d7b2f4086ull};

struct ChunkImportState {
  std::shared_ptr<CacheHandle> handle;
  Cache* cache = nullptr;  // the cache at begin: the blocks are only given back to it
  std::unique_ptr<ChunkImport> import;

  // Whether the blocks can still go back (the cache alive, not disposed since).
  bool cacheAlive() const { return handle->cache && handle->cache.get() == cache; }
  void close() {
    if (import && !cacheAlive()) import->forget();
    import.reset();
    if (handle->cache) handle->reportMemory();
  }
  ~ChunkImportState() {
    if (import && !cacheAlive()) import->forget();
  }
};

ChunkImportState& stateArg(const Napi::CallbackInfo& info, CacheHandle* handle) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsExternal() || !info[0].As<Napi::Object>().CheckTypeTag(&kChunkImportTag)) {
    throwError(env, StatusCode::kInvalidArgument, "import must come from beginChunkImport");
  }
  ChunkImportState* state = info[0].As<Napi::External<ChunkImportState>>().Data();
  if (state->handle.get() != handle) throwError(env, StatusCode::kInvalidArgument, "the import belongs to another cache");
  if (!state->import) throwError(env, StatusCode::kInvalidArgument, "the import has finished or was aborted");
  return *state;
}

}  // namespace

Napi::Value CacheWrap::beginChunkImport(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Cache& cache = live(env);
  const TypedView prelude = argTypedOf(info, 0, "prelude", napi_uint8_array, "Uint8Array");
  const TypedView rows = argTypedOf(info, 1, "rows", napi_uint32_array, "Uint32Array");
  auto state = std::make_unique<ChunkImportState>();
  state->handle = handle_;
  state->cache = &cache;
  state->import = std::make_unique<ChunkImport>(cache);
  throwIfError(env, state->import->begin(static_cast<const uint8_t*>(prelude.data), prelude.length,
                                         static_cast<const uint32_t*>(rows.data), static_cast<uint32_t>(rows.length)));
  handle_->reportMemory();
  Napi::External<ChunkImportState> external =
      Napi::External<ChunkImportState>::New(env, state.release(), [](Napi::Env, ChunkImportState* s) { delete s; });
  external.TypeTag(&kChunkImportTag);
  return external;
}

Napi::Value CacheWrap::chunkImportAdd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  live(env);
  ChunkImportState& state = stateArg(info, handle_.get());
  const uint32_t chunk = argU32(info, 1, "chunk");
  const TypedView frame = argTypedOf(info, 2, "frame", napi_uint8_array, "Uint8Array");
  const uint32_t payloadAt = argU32(info, 3, "payloadAt");
  const Status status = state.import->add(chunk, static_cast<const uint8_t*>(frame.data), frame.length, payloadAt);
  if (!status.isOk()) state.close();  // a failed import holds nothing
  throwIfError(env, status);
  return env.Undefined();
}

Napi::Value CacheWrap::chunkImportFinish(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  live(env);
  ChunkImportState& state = stateArg(info, handle_.get());
  uint64_t id = 0;
  const Status status = state.import->finish(&id);
  if (status.isOk() || status.code() == StatusCode::kCorruptData) state.close();
  throwIfError(env, status);
  return SequenceWrap::create(env, handle_, id);
}

Napi::Value CacheWrap::chunkImportAbort(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() >= 1 && info[0].IsExternal() && info[0].As<Napi::Object>().CheckTypeTag(&kChunkImportTag)) {
    ChunkImportState* state = info[0].As<Napi::External<ChunkImportState>>().Data();
    if (state->handle.get() == handle_.get()) state->close();
  }
  return env.Undefined();
}

}  // namespace kvc::binding
