#!/usr/bin/env bash
# `npm run test:sanitize`: builds core, CPU backend, emulated CUDA backend, addon and native
# tests with AddressSanitizer + UndefinedBehaviorSanitizer (build-sanitize/, g++ and its
# shared libasan; any UB report aborts), runs the native tests, then a vitest subset against
# the sanitized addon with libasan preloaded into node (leak detection off for node itself,
# which keeps allocations until exit). Zero findings or the run fails.
#   --quick   a smaller vitest subset (what CI runs); both run the model-based test with
#             500 operations per configuration (KVC_MODEL_OPS)
# The emulator runs CUDA threads as fibers with its own stacks; cuda/emu/fiber_x86_64.cpp
# tells ASan about every switch (__sanitizer_start/finish_switch_fiber), so the fiber mode
# runs under ASan as is; kvc_emu_selftest also covers the thread mode.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
[ "${1:-}" = "--quick" ] && quick=1
build=build-sanitize

npx cmake-js build --out "$build" --CDKVC_SANITIZE=ON --CDKVC_CUDA=OFF

export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:detect_stack_use_after_return=0"
echo "== sanitize: native tests"
"$build/kvc_compaction_tests" --quick | tail -1
KVCOMPACT_SIMD=portable "$build/kvc_compaction_tests" --quick | tail -1
"$build/cuda/kvc_emu_selftest" | tail -1
"$build/cuda/kvc_cuda_kernel_tests" | tail -1

echo "== sanitize: vitest against the sanitized addon"
asan="$(g++ -print-file-name=libasan.so)"
subset=(test/foundation test/eviction/errors.test.ts test/eviction/gather.test.ts test/eviction/fork.test.ts
        test/compactor/compactor.test.ts test/cuda/parity.test.ts test/fuzz test/model)
if [ "$quick" = 1 ]; then
  subset=(test/foundation/append-read.test.ts test/foundation/attention.test.ts test/foundation/export-import.test.ts
          test/foundation/fork.test.ts test/foundation/truncate.test.ts test/foundation/bad-input.test.ts
          test/eviction/errors.test.ts test/compactor/compactor.test.ts test/cuda/parity.test.ts test/fuzz test/model)
fi
LD_PRELOAD="$asan" ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:detect_stack_use_after_return=0" \
  KVC_MODEL_OPS="${KVC_MODEL_OPS:-500}" KVCOMPACT_NATIVE="$PWD/$build/Release/kvcompact.node" KVC_NATIVE_TEST_DIR="$PWD/$build" \
  node scripts/run-tests.mjs "${subset[@]}"
echo "sanitize: passed"
