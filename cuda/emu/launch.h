// Kernel launches in the emulator: KVC_LAUNCH(kernel, grid, block, smem, stream)(args...)
// runs every block of the grid, one after another, before it returns (all streams are
// synchronous). Launch errors are reported through cudaGetLastError(), as on a device.
#pragma once
#include <cstddef>
#include <utility>

#include <driver_types.h>
#include <vector_types.h>

namespace kvc_emu {

struct LaunchConfig {
  dim3 grid;
  dim3 block;
  size_t sharedBytes = 0;
  const char* name = "";
};

// Runs body(ctx) once per CUDA thread of the grid; returns the launch error, if any.
cudaError_t runGrid(const LaunchConfig& config, void (*body)(void*), void* ctx);
void setLastError(cudaError_t error);

template <class... Params>
class KernelLaunch {
 public:
  KernelLaunch(void (*kernel)(Params...), const LaunchConfig& config) : kernel_(kernel), config_(config) {}

  // Arguments convert to the kernel's parameter types here, as in a real launch; every
  // CUDA thread then receives its own copy (kernel parameters are passed by value).
  void operator()(Params... args) const {
    auto call = [&]() { kernel_(args...); };
    const cudaError_t error = runGrid(config_, [](void* c) { (*static_cast<decltype(call)*>(c))(); }, &call);
    if (error != cudaSuccess) setLastError(error);
  }

 private:
  void (*kernel_)(Params...);
  LaunchConfig config_;
};

template <class... Params>
KernelLaunch<Params...> makeLaunch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t sharedBytes,
                                   cudaStream_t /*stream*/, const char* name) {
  LaunchConfig config;
  config.grid = grid;
  config.block = block;
  config.sharedBytes = sharedBytes;
  config.name = name;
  return KernelLaunch<Params...>(kernel, config);
}

}  // namespace kvc_emu
