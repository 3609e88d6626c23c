#!/usr/bin/env bash
# `npm run fuzz -- --seconds N` (default 60): builds the libFuzzer harness
# test/fuzz/fuzz_import.cpp with clang (ASan + UBSan, build-fuzz/), replays the regression
# inputs of test/fuzz/regressions/, then fuzzes for N seconds from the seed corpus
# test/fuzz/corpus/ (regenerate with `npx tsx test/fuzz/make-corpus.ts`). New inputs go to
# build-fuzz/corpus/, crashes to build-fuzz/crashes/ (the run then fails; copy the input to
# test/fuzz/regressions/ once the bug is fixed). libFuzzer's final lines give executions
# (stat::number_of_executed_units) and coverage (cov: / ft:).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=60
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --seconds=*) seconds="${1#*=}"; shift ;;
    *) echo "fuzz: unknown argument $1 (use --seconds N)" >&2; exit 2 ;;
  esac
done

cxx="${KVC_CLANGXX:-$(command -v clang++ || command -v clang++-14 || true)}"
cc="${KVC_CLANG:-$(command -v clang || command -v clang-14 || true)}"
if [ -z "$cxx" ] || [ -z "$cc" ]; then
  echo "fuzz: clang not found (Debian: apt-get install clang-14 libclang-rt-14-dev)" >&2
  exit 1
fi
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)

CC="$cc" CXX="$cxx" cmake -S . -B build-fuzz "${generator[@]}" -DKVC_FUZZ=ON -DKVC_CUDA=OFF \
  -DKVC_CUDA_TREE=OFF -DKVC_TESTS=OFF -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build-fuzz -j"${JOBS_FUZZ:-2}" --target kvc_fuzz_import

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
mkdir -p build-fuzz/corpus build-fuzz/crashes

regressions=(test/fuzz/regressions/*)
if [ -e "${regressions[0]}" ]; then
  echo "fuzz: replaying ${#regressions[@]} regression inputs"
  set +e
  ./build-fuzz/kvc_fuzz_import -runs=1 "${regressions[@]}" >build-fuzz/regressions.log 2>&1
  replay=$?
  set -e
  grep -E "^Executed|ERROR|SUMMARY" build-fuzz/regressions.log | tail -3 || true
  if [ "$replay" -ne 0 ]; then
    echo "fuzz: a regression input fails again; see build-fuzz/regressions.log" >&2
    exit 1
  fi
fi

echo "fuzz: ${seconds} s from test/fuzz/corpus ($(ls test/fuzz/corpus | wc -l) seeds)"
set +e
./build-fuzz/kvc_fuzz_import build-fuzz/corpus test/fuzz/corpus \
  -max_total_time="$seconds" -print_final_stats=1 -max_len=65536 -rss_limit_mb=2048 -timeout=10 \
  -artifact_prefix=build-fuzz/crashes/ >build-fuzz/last-run.log 2>&1
status=$?
set -e
grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)|^stat::|ERROR|SUMMARY|invariant|^artifact' build-fuzz/last-run.log || true
if [ "$status" -ne 0 ]; then
  echo "fuzz: libFuzzer exited with $status; see build-fuzz/last-run.log and build-fuzz/crashes/" >&2
  exit "$status"
fi
echo "fuzz: passed"
