// readPass(typedArray, threads): one timed-by-the-caller read over the buffer, the
// bandwidth floor of the benchmarks; returns a checksum so the read is not elided.
#include "bench_binding.h"

#include "../cpu/read_pass.h"
#include "args.h"

namespace kvc::binding {

namespace {

Napi::Value readPass(const Napi::CallbackInfo& info) {
  TypedView buffer = argTyped(info, 0, "buffer");
  const uint32_t threads = argU32(info, 1, "threads");
  const Napi::TypedArray array = info[0].As<Napi::TypedArray>();
  const uint64_t x = cpu::readPass(static_cast<const uint8_t*>(buffer.data), array.ByteLength(), threads ? threads : 1);
  return Napi::Number::New(info.Env(), static_cast<double>(x & 0xFFFFFFFFu));
}

}  // namespace

void registerBench(Napi::Env env, Napi::Object exports) {
  exports.Set("readPass", Napi::Function::New(env, readPass));
}

}  // namespace kvc::binding
