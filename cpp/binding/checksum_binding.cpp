// The export format's CRC-32 for TypeScript, at the speed of the native import:
//   crc32(bytes, crc, implementation?): CRC-32 of bytes continuing from crc (0 to start), by
//     the process's choice or the named one ('table', 'pclmul', 'vpclmul': tests compare
//     each with a scalar reference; UNSUPPORTED where the CPU lacks it);
//   crc32Implementation(): which implementation crc32 uses ('vpclmul', 'pclmul' or 'table');
//   gatherCrc32(sources, pieces, out): copies pieces [source index, offset, length] (a
//     Float64Array of triples) one after another into out and returns the CRC-32 of the bytes
//     written, each piece checksummed while it is still in cache.
#include "checksum_binding.h"

#include <cstring>
#include <string>
#include <vector>

#include "../core/crc32.h"
#include "../core/crc32_clmul.h"
#include "args.h"
#include "errors.h"
#include "guard.h"

namespace kvc::binding {

namespace {

TypedView bytesArg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  return argTypedOf(info, i, name, napi_uint8_array, "Uint8Array");
}

Napi::Value crc32(const Napi::CallbackInfo& info) {
  const TypedView bytes = bytesArg(info, 0, "bytes");
  const uint32_t crc = argU32(info, 1, "crc");
  uint32_t (*fn)(uint32_t, const uint8_t*, size_t) = crc32Update;
  if (info.Length() > 2 && !info[2].IsUndefined()) {
    const std::string name = info[2].IsString() ? info[2].As<Napi::String>().Utf8Value() : "";
    if (name == "table") {
      fn = crc32UpdateTable;
    } else if (name == "pclmul" || name == "vpclmul") {
      const bool wide = name == "vpclmul";
      if (!(wide ? crc32VpclmulAvailable() : crc32PclmulAvailable())) throwError(info.Env(), StatusCode::kUnsupported, name + " is not available on this CPU");
      fn = wide ? crc32UpdateVpclmul : crc32UpdatePclmul;
    } else {
      throwError(info.Env(), StatusCode::kInvalidArgument, "implementation must be 'table', 'pclmul' or 'vpclmul'");
    }
  }
  return Napi::Number::New(info.Env(), fn(crc, static_cast<const uint8_t*>(bytes.data), bytes.length));
}

Napi::Value crc32Implementation(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), kvc::crc32Implementation());
}

Napi::Value gatherCrc32(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsArray()) throwError(env, StatusCode::kInvalidArgument, "sources must be an array of Uint8Array");
  const Napi::Array list = info[0].As<Napi::Array>();
  std::vector<TypedView> sources(list.Length());
  for (uint32_t i = 0; i < list.Length(); ++i) {
    if (!typedView(env, list.Get(i), &sources[i]) || sources[i].type != napi_uint8_array) {
      throwError(env, StatusCode::kInvalidArgument, "sources[" + std::to_string(i) + "] must be a Uint8Array");
    }
  }
  const TypedView pieces = argTypedOf(info, 1, "pieces", napi_float64_array, "Float64Array");
  const TypedView out = bytesArg(info, 2, "out");
  if (pieces.length % 3 != 0) throwError(env, StatusCode::kInvalidArgument, "pieces must hold [source, offset, length] triples");
  const double* plan = static_cast<const double*>(pieces.data);
  auto* dst = static_cast<uint8_t*>(out.data);
  size_t at = 0;
  // Every triple is checked before anything is copied: bad arguments leave out untouched.
  for (size_t i = 0; i < pieces.length; i += 3) {
    const double s = plan[i], offset = plan[i + 1], length = plan[i + 2];
    if (!(s >= 0 && s < static_cast<double>(sources.size()) && s == static_cast<double>(static_cast<size_t>(s))) ||
        !(offset >= 0 && length >= 0 && offset == static_cast<double>(static_cast<uint64_t>(offset)) &&
          length == static_cast<double>(static_cast<uint64_t>(length))) ||
        offset + length > static_cast<double>(sources[static_cast<size_t>(s)].length) || length > static_cast<double>(out.length - at)) {
      throwError(env, StatusCode::kInvalidArgument, "piece " + std::to_string(i / 3) + " lies outside its source or the output");
    }
    at += static_cast<size_t>(length);
  }
  uint32_t crc = 0;
  at = 0;
  for (size_t i = 0; i < pieces.length; i += 3) {
    const auto* src = static_cast<const uint8_t*>(sources[static_cast<size_t>(plan[i])].data) + static_cast<size_t>(plan[i + 1]);
    const size_t n = static_cast<size_t>(plan[i + 2]);
    if (n == 0) continue;
    std::memcpy(dst + at, src, n);
    crc = crc32Update(crc, dst + at, n);
    at += n;
  }
  return Napi::Number::New(env, crc);
}

}  // namespace

void registerChecksum(Napi::Env env, Napi::Object exports) {
  exports.Set("crc32", Napi::Function::New(env, guarded<crc32>));
  exports.Set("crc32Implementation", Napi::Function::New(env, guarded<crc32Implementation>));
  exports.Set("gatherCrc32", Napi::Function::New(env, guarded<gatherCrc32>));
}

}  // namespace kvc::binding
