// Module entry: registers NativeCache / NativeSequence, the error factory hook and the
// device report. lib/native/ is the only TypeScript code that sees these names.
#include <napi.h>

#include <string>
#include <thread>
#include <vector>

#include "../cpu/cpu_features.h"
#include "../core/config.h"
#include "addon_data.h"
#include "kvc/thread_locals.h"
#include "args.h"
#include "errors.h"
#include "guard.h"
#include "kvc/generated/schema.h"
#include "bench_binding.h"
#include "build_info.h"
#include "compaction_binding.h"
#include "maintain_binding.h"
#include "cache_wrap.h"
#include "checksum_binding.h"
#include "cuda_emulation.h"
#include "cuda_probe_binding.h"
#include "eviction_binding.h"
#include "kvc/backend.h"
#include "sequence_wrap.h"

namespace kvc::binding {

namespace {

Napi::Value setErrorFactory(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsFunction()) {
    throw Napi::TypeError::New(info.Env(), "setErrorFactory expects a function");
  }
  addonData(info.Env()).errorFactory = Napi::Persistent(info[0].As<Napi::Function>());
  return info.Env().Undefined();
}

Napi::Value devices(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object cpu = Napi::Object::New(env);
  cpu.Set("available", true);
  cpu.Set("threads", std::max(1u, std::thread::hardware_concurrency()));
  const cpu::CpuFeatures& f = cpu::cpuFeatures();
  cpu.Set("simd", f.avx512 ? "avx512" : f.avx2 ? "avx2" : "portable");
  // The integer kernels of precision 'fast' (docs/fast-precision.md).
  cpu.Set("fastKernels", f.avx512vnni ? "avx512-vnni" : "portable");

  const CudaInfo c = cudaDeviceInfo();
  Napi::Object cuda = Napi::Object::New(env);
  cuda.Set("emulationCompiled", cudaEmulationCompiled());
  cuda.Set("emulated", cudaEmulationFactory() != nullptr);
  cuda.Set("available", c.available);
  cuda.Set("compiled", c.compiled);
  if (!c.available) cuda.Set("reason", c.reason);
  if (c.available) {
    cuda.Set("name", c.deviceName);
    cuda.Set("devices", c.deviceCount);
    cuda.Set("totalMemory", static_cast<double>(c.totalMemory));
    cuda.Set("computeCapability", c.computeCapability / 10.0);
  }
  if (c.runtimeVersion) cuda.Set("runtimeVersion", c.runtimeVersion);
  if (c.driverVersion) cuda.Set("driverVersion", c.driverVersion);

  Napi::Object out = Napi::Object::New(env);
  out.Set("cpu", cpu);
  out.Set("cuda", cuda);
  return out;
}

// blockLayout(keys, values, headDim, groupSize, blockSize, keySummaries?, valueDim?): the byte sizes of
// kvc/formats.h, so that TypeScript plans memory with the one definition of the formats. valueDim:
// floats per value row when it differs from headDim (low-rank values of another rank).
Napi::Value blockLayout(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto storage = [&](size_t i, const char* name) {
    const int k = i < info.Length() && info[i].IsString()
                      ? schema::enumIndex(schema::kStorageNames, schema::kStorageCount, info[i].As<Napi::String>().Utf8Value().c_str())
                      : -1;
    if (k < 0) throwError(env, StatusCode::kInvalidArgument, std::string(name) + " must be one of 'f32', 'f16', 'bf16', 'int8', 'int4'");
    return static_cast<Storage>(k);
  };
  const Storage keys = storage(0, "keys"), values = storage(1, "values");
  const uint32_t headDim = argU32(info, 2, "headDim");
  const uint32_t groupSize = argU32(info, 3, "groupSize");
  const uint32_t blockSize = argU32(info, 4, "blockSize");
  // The same checks as a cache's configuration, so that no layout is computed for sizes a
  // cache would refuse (a zero groupSize would divide by zero).
  CacheConfig c;
  c.layers = 1;
  c.kvHeads = 1;
  c.queryHeads = 1;
  c.headDim = headDim;
  c.groupSize = groupSize;
  c.blockSize = blockSize;
  c.keys = keys;
  c.values = values;
  c.keySummaries = info.Length() > 5 && info[5].IsBoolean() && info[5].As<Napi::Boolean>().Value();
  throwIfError(env, validateConfig(c));
  BlockLayout l = c.blockLayout();
  if (info.Length() > 6 && !info[6].IsUndefined()) {
    const uint32_t valueDim = argU32(info, 6, "valueDim");
    if (valueDim == 0 || valueDim % groupSize != 0) throwError(env, StatusCode::kInvalidArgument, "valueDim must be a positive multiple of groupSize");
    l = makeBlockLayout(blockSize, l.keyRowBytes, rowBytes(values, valueDim, groupSize));
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("keyRowBytes", l.keyRowBytes);
  out.Set("valueRowBytes", l.valueRowBytes);
  out.Set("blockBytes", static_cast<double>(blockFootprint(l)));  // with the key-summary entry
  return out;
}

// The environment is shutting down (worker_thread terminated or exiting, or the process
// ending): stop and join pending asynchronous work before the finalizers free the caches.
void onEnvironmentCleanup(void* arg) {
  AddonData* data = static_cast<AddonData*>(arg);
  std::vector<PendingWork*> work(data->pending.begin(), data->pending.end());
  data->pending.clear();
  for (PendingWork* w : work) w->abandon();
}

void deleteAddonData(Napi::Env env, AddonData* data) {
  napi_remove_env_cleanup_hook(env, onEnvironmentCleanup, data);
  delete data;
}

Napi::Object init(Napi::Env env, Napi::Object exports) {
  auto* data = new AddonData();
  env.SetInstanceData<AddonData, deleteAddonData>(data);
  if (napi_add_env_cleanup_hook(env, onEnvironmentCleanup, data) != napi_ok) {
    throw Napi::Error::New(env, "kvcompact: could not register the environment cleanup hook");
  }
  Napi::Function cache = CacheWrap::define(env);
  Napi::Function sequence = SequenceWrap::define(env);
  data->cacheConstructor = Napi::Persistent(cache);
  data->sequenceConstructor = Napi::Persistent(sequence);
  exports.Set("NativeCache", cache);
  exports.Set("NativeSequence", sequence);
  exports.Set("setErrorFactory", Napi::Function::New(env, guarded<setErrorFactory>));
  exports.Set("devices", Napi::Function::New(env, guarded<devices>));
  exports.Set("blockLayout", Napi::Function::New(env, guarded<blockLayout>));
  registerEviction(env, exports);
  registerCompaction(env, exports);
  registerMaintain(env, exports);
  registerBench(env, exports);
  registerChecksum(env, exports);
  registerBuildInfo(env, exports);
  registerCudaProbe(env, exports);
  registerCudaEmulation(env, exports);
  return exports;
}

}  // namespace

}  // namespace kvc::binding

static Napi::Object InitKvcompact(Napi::Env env, Napi::Object exports) {
  kvc::reserveThreadLocals();  // the JS thread: see kvc/thread_locals.h
  return kvc::binding::guard(env, [&] { return kvc::binding::init(env, exports); });
}

NODE_API_MODULE(kvcompact, InitKvcompact)
