// Status codes returned by every layer below the binding. Only cpp/binding turns a
// non-ok Status into a JavaScript exception; nothing in the library aborts the process.
#pragma once
#include <string>
#include <utility>

#include "kvc/generated/schema.h"

namespace kvc {

// The names (the stable public codes) come from schema/options.json, as lib/errors.ts's do;
// the order here must follow its errorCodes list (checked below).
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
  kAborted,  // the caller cancelled (AbortSignal); nothing was changed
};

static_assert(static_cast<int>(StatusCode::kAborted) + 1 == schema::kErrorCodeCount,
              "StatusCode and schema/options.json errorCodes differ");

inline const char* statusCodeName(StatusCode code) {
  const int i = static_cast<int>(code);
  return i >= 0 && i < schema::kErrorCodeCount ? schema::kErrorCodeNames[i] : "INTERNAL";
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
inline Status aborted(std::string m) { return Status(StatusCode::kAborted, std::move(m)); }

}  // namespace kvc

// Propagates a non-ok Status to the caller.
#define KVC_RETURN_IF_ERROR(expr)             \
  do {                                        \
    ::kvc::Status kvc_status_ = (expr);       \
    if (!kvc_status_.isOk()) return kvc_status_; \
  } while (0)
