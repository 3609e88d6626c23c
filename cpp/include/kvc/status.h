// Status codes returned by every layer below the binding. Only cpp/binding turns a
// non-ok Status into a JavaScript exception; nothing in the library aborts the process.
#pragma once
#include <string>
#include <utility>

namespace kvc {

// Keep in sync with lib/errors.ts (ErrorCode). The names are the stable public codes.
enum class StatusCode : int {
  kOk = 0,
  kInvalidArgument,
  kShapeMismatch,
  kOutOfMemory,
  kDisposed,
  kBusy,
  kCorruptData,
  kCudaUnavailable,
  kCudaError,
  kUnsupported,
  kInternal,
};

inline const char* statusCodeName(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return "OK";
    case StatusCode::kInvalidArgument: return "INVALID_ARGUMENT";
    case StatusCode::kShapeMismatch: return "SHAPE_MISMATCH";
    case StatusCode::kOutOfMemory: return "OUT_OF_MEMORY";
    case StatusCode::kDisposed: return "DISPOSED";
    case StatusCode::kBusy: return "BUSY";
    case StatusCode::kCorruptData: return "CORRUPT_DATA";
    case StatusCode::kCudaUnavailable: return "CUDA_UNAVAILABLE";
    case StatusCode::kCudaError: return "CUDA_ERROR";
    case StatusCode::kUnsupported: return "UNSUPPORTED";
    case StatusCode::kInternal: return "INTERNAL";
  }
  return "INTERNAL";
}

class Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}
  static Status ok() { return Status(); }

  bool isOk() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline Status invalidArgument(std::string m) { return Status(StatusCode::kInvalidArgument, std::move(m)); }
inline Status shapeMismatch(std::string m) { return Status(StatusCode::kShapeMismatch, std::move(m)); }
inline Status outOfMemory(std::string m) { return Status(StatusCode::kOutOfMemory, std::move(m)); }
inline Status corruptData(std::string m) { return Status(StatusCode::kCorruptData, std::move(m)); }
inline Status busy(std::string m) { return Status(StatusCode::kBusy, std::move(m)); }
inline Status unsupported(std::string m) { return Status(StatusCode::kUnsupported, std::move(m)); }
inline Status internalError(std::string m) { return Status(StatusCode::kInternal, std::move(m)); }

}  // namespace kvc

// Propagates a non-ok Status to the caller.
#define KVC_RETURN_IF_ERROR(expr)             \
  do {                                        \
    ::kvc::Status kvc_status_ = (expr);       \
    if (!kvc_status_.isOk()) return kvc_status_; \
  } while (0)
