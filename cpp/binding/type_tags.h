// napi type tags of the objects the binding unwraps. An object is unwrapped only after its
// tag is checked, so a forged object (Object.create(NativeSequence.prototype), a plain object,
// a NativeCache where a sequence is expected) is an INVALID_ARGUMENT, never a bad cast.
#pragma once
#include <node_api.h>

namespace kvc::binding {

inline constexpr napi_type_tag kCacheTag = {0x6b7663636163ull, 0x1f3b5d7f9e2c4a61ull};
inline constexpr napi_type_tag kSequenceTag = {0x6b7663736571ull, 0x8d2e6f1a3c5b7e90ull};
inline constexpr napi_type_tag kNewSequenceTag = {0x6b76636e6577ull, 0x4c1d9b3e7a2f6058ull};

}  // namespace kvc::binding
