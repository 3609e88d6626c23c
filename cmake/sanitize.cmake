# Hardening builds, each configured into its own build directory (never build/):
#   KVC_SANITIZE=ON  AddressSanitizer + UndefinedBehaviorSanitizer on everything (core, CPU
#                    backend, emulated CUDA backend, addon, native tests); any UB report aborts.
#                    Used by scripts/sanitize.sh (build-sanitize/).
#   KVC_FUZZ=ON      clang only: core + CPU backend instrumented for libFuzzer (with ASan and
#                    UBSan) and the harness test/fuzz/fuzz_import.cpp (kvc_fuzz_import).
#                    Used by scripts/fuzz.sh (build-fuzz/).
# Included from CMakeLists.txt right after project(), before any target exists.
option(KVC_SANITIZE "Build everything with ASan + UBSan" OFF)
option(KVC_FUZZ "Build the libFuzzer harness (clang)" OFF)

set(KVC_SANITIZER_FLAGS -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer)

# C and C++ only: nvcc (a CUDA-enabled configure) must not see these flags.
if(KVC_SANITIZE)
  # -O1 with line tables only: reports with file:line at a fraction of -O3 -g's compile time.
  add_compile_options("$<$<COMPILE_LANGUAGE:C,CXX>:${KVC_SANITIZER_FLAGS};-O1;-g1>")
  add_link_options(-fsanitize=address,undefined)
endif()

if(KVC_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "KVC_FUZZ needs clang (libFuzzer): configure with CXX=clang++")
  endif()
  add_compile_options("$<$<COMPILE_LANGUAGE:C,CXX>:-fsanitize=fuzzer-no-link;${KVC_SANITIZER_FLAGS};-O1;-gline-tables-only>")
  add_link_options(-fsanitize=address,undefined)
endif()

# The harness target, once kvc_core exists (called from CMakeLists.txt).
function(kvc_add_fuzz_targets)
  if(KVC_FUZZ)
    # cache.cpp names the CUDA backend factory; the stub answers "built without CUDA".
    add_executable(kvc_fuzz_import "${CMAKE_CURRENT_SOURCE_DIR}/test/fuzz/fuzz_import.cpp" ${KVC_CUDA_STUB_SOURCES})
    target_include_directories(kvc_fuzz_import PRIVATE "${CMAKE_CURRENT_SOURCE_DIR}/cpp")
    target_link_libraries(kvc_fuzz_import PRIVATE kvc_core)
    target_link_options(kvc_fuzz_import PRIVATE -fsanitize=fuzzer)
  endif()
endfunction()
