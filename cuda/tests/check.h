// The check counters and EXPECT of the CUDA test executables (one set per executable): a
// failed check prints its place, the current case and the message (the first 40 of them);
// each executable's main() reports `checks` and `failures`.
#pragma once
#include <cstdio>
#include <string>

inline int failures = 0;
inline int checks = 0;
inline std::string currentCase;  // named in every failure message

#define EXPECT(cond, ...)                                                                      \
  do {                                                                                         \
    ++checks;                                                                                  \
    if (!(cond)) {                                                                             \
      if (++failures <= 40) {                                                                  \
        std::fprintf(stderr, "FAIL %s:%d [%s]: ", __FILE__, __LINE__, currentCase.c_str());    \
        std::fprintf(stderr, __VA_ARGS__);                                                     \
        std::fprintf(stderr, "\n");                                                            \
      }                                                                                        \
    }                                                                                          \
  } while (0)
