// Thread-local data of the module, allocated while memory is still there.
//
// The addon links the C++ runtime statically, so the runtime's thread-local data (the
// exception globals among it) lives in the module's dynamic TLS block. glibc allocates that
// block with malloc on a thread's first access and aborts the whole process when the
// allocation fails ("cannot allocate memory for thread-local data"). The first access is
// often the throw of std::bad_alloc itself, exactly when memory has run out. Every thread
// that runs kvcompact code calls this on entry, so the block is allocated at a moment where
// it can succeed and an out-of-memory later stays a typed error.
#pragma once

#include <exception>

namespace kvc {

inline void reserveThreadLocals() noexcept {
  // Reads the runtime's per-thread exception globals: one access allocates the whole block.
  (void)std::uncaught_exceptions();
}

}  // namespace kvc
