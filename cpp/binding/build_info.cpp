// The build facts come from the build system as macros: CMakeLists.txt defines them; the
// node-gyp fallback (binding.gyp) defines none, hence the defaults below.
#include "build_info.h"

#include "cuda_emulation.h"
#include "guard.h"
#include "kvc/backend.h"

#ifndef KVC_BUILD_SYSTEM
#define KVC_BUILD_SYSTEM "node-gyp"
#endif
#ifndef KVC_CUDA_ARCHITECTURES
#define KVC_CUDA_ARCHITECTURES ""
#endif
#ifndef KVC_STATIC_CXX_RUNTIME
#define KVC_STATIC_CXX_RUNTIME 0
#endif

namespace kvc::binding {

namespace {

const char* compilerName() {
#if defined(__clang__)
  return "clang " __clang_version__;
#elif defined(__GNUC__)
  return "gcc " __VERSION__;
#elif defined(_MSC_VER)
  return "msvc";
#else
  return "unknown";
#endif
}

Napi::Value buildInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  out.Set("buildSystem", KVC_BUILD_SYSTEM);
  out.Set("compiler", compilerName());
  out.Set("napiVersion", NAPI_VERSION);
  out.Set("cudaCompiled", queryCuda().compiled);
  out.Set("cudaArchitectures", KVC_CUDA_ARCHITECTURES);
  out.Set("cudaEmulationCompiled", cudaEmulationCompiled());
  out.Set("staticCxxRuntime", KVC_STATIC_CXX_RUNTIME != 0);
#ifdef NDEBUG
  out.Set("assertions", false);
#else
  out.Set("assertions", true);
#endif
  return out;
}

}  // namespace

void registerBuildInfo(Napi::Env env, Napi::Object exports) {
  exports.Set("buildInfo", Napi::Function::New(env, guarded<buildInfo>));
}

}  // namespace kvc::binding
