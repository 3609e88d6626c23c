#!/usr/bin/env bash
# Builds the core, the CPU backend (with its AVX2 / AVX-512 kernel regions), the emulated
# CUDA backend and their native tests with clang in build-clang/, and runs the tests: the
# kernels must compile and pass with clang as with g++ (cpp/cpu/isa_region.h). The addon
# itself is not built here (cmake-js provides its Node headers); `npm run build:native`
# builds it with the default compiler.
set -euo pipefail
cd "$(dirname "$0")/.."

cxx="${KVC_CLANGXX:-$(command -v clang++ || command -v clang++-14 || true)}"
cc="${KVC_CLANG:-$(command -v clang || command -v clang-14 || true)}"
if [ -z "$cxx" ] || [ -z "$cc" ]; then
  echo "clang-check: clang not found (Debian: apt-get install clang-14)" >&2
  exit 1
fi
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)

echo "clang-check: $("$cxx" --version | head -1)"
CC="$cc" CXX="$cxx" cmake -S . -B build-clang "${generator[@]}" -DKVC_CUDA=OFF -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build-clang -j"${JOBS_CLANG:-2}" --target kvc_compaction_tests kvc_emu_selftest kvc_cuda_kernel_tests

./build-clang/kvc_compaction_tests | tail -1
KVCOMPACT_SIMD=portable ./build-clang/kvc_compaction_tests --quick | tail -1
./build-clang/cuda/kvc_emu_selftest | tail -1
./build-clang/cuda/kvc_cuda_kernel_tests | tail -1
echo "clang-check: passed"
