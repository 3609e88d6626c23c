// Linked only into the addons that carry their own libstdc++ (CMakeLists.txt,
// KVC_STATIC_CXX_RUNTIME). libstdc++'s std::random_device refers to arc4random, which glibc
// has only since 2.36; that one reference would make the prebuilt binary refuse to load on
// glibc 2.35 (Ubuntu 22.04). This private definition satisfies it from getrandom (glibc 2.25),
// so the binary needs glibc 2.35. kvcompact itself never uses std::random_device.
#include <sys/random.h>

#include <cstdint>
#include <cstdlib>

extern "C" __attribute__((visibility("hidden"))) uint32_t arc4random(void) {
  uint32_t value = 0;
  unsigned char* p = reinterpret_cast<unsigned char*>(&value);
  size_t got = 0;
  while (got < sizeof value) {
    const ssize_t n = getrandom(p + got, sizeof value - got, 0);
    if (n > 0) got += static_cast<size_t>(n);
    else if (n < 0) std::abort();  // no entropy source at all: nothing sensible to return
  }
  return value;
}
