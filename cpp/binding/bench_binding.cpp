// Probes the benchmarks time to set floors beside the kernels' numbers:
//   readPass(typedArray, threads): one read over the buffer (the bandwidth floor); returns a
//     checksum so the read is not elided;
//   readFloor(mebibytes, threads, runs): the read rate in bytes/s over memory mapped like the
//     block pool (huge pages where offered), the faster of two loops' medians: the floor the
//     benchmarks use;
//   fmaProbe(iterations): independent vector FMA chains on this thread (the arithmetic floor);
//     returns { multiplyAdds, lanes, checksum }.
#include "bench_binding.h"

#include "../cpu/fma_probe.h"
#include "../cpu/read_pass.h"
#include "args.h"
#include "guard.h"

namespace kvc::binding {

namespace {

Napi::Value readPass(const Napi::CallbackInfo& info) {
  TypedView buffer = argTyped(info, 0, "buffer");
  const uint32_t threads = argU32(info, 1, "threads");
  const Napi::TypedArray array = info[0].As<Napi::TypedArray>();
  const uint64_t x = cpu::readPass(static_cast<const uint8_t*>(buffer.data), array.ByteLength(), threads ? threads : 1);
  return Napi::Number::New(info.Env(), static_cast<double>(x & 0xFFFFFFFFu));
}

Napi::Value readFloor(const Napi::CallbackInfo& info) {
  const uint32_t mib = argU32(info, 0, "mebibytes");
  const uint32_t threads = argU32(info, 1, "threads");
  const uint32_t runs = argU32(info, 2, "runs");
  if (mib == 0 || threads == 0 || runs == 0) {
    throwError(info.Env(), StatusCode::kInvalidArgument, "readFloor: mebibytes, threads and runs must be at least 1");
  }
  const double rate = cpu::readFloorBytesPerSecond(static_cast<uint64_t>(mib) << 20, threads, runs);
  if (!(rate > 0)) throwError(info.Env(), StatusCode::kOutOfMemory, "readFloor: could not map " + std::to_string(mib) + " MiB");
  return Napi::Number::New(info.Env(), rate);
}

Napi::Value fmaProbe(const Napi::CallbackInfo& info) {
  const uint32_t iterations = argU32(info, 0, "iterations");
  const cpu::FmaProbe probe = cpu::fmaProbe(iterations);
  Napi::Object out = Napi::Object::New(info.Env());
  out.Set("multiplyAdds", Napi::Number::New(info.Env(), static_cast<double>(probe.multiplyAdds)));
  out.Set("lanes", Napi::Number::New(info.Env(), probe.lanes));
  out.Set("checksum", Napi::Number::New(info.Env(), probe.checksum));
  return out;
}

}  // namespace

void registerBench(Napi::Env env, Napi::Object exports) {
  exports.Set("readPass", Napi::Function::New(env, guarded<readPass>));
  exports.Set("readFloor", Napi::Function::New(env, guarded<readFloor>));
  exports.Set("fmaProbe", Napi::Function::New(env, guarded<fmaProbe>));
}

}  // namespace kvc::binding
