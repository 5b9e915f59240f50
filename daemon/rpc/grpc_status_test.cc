// The absl::Status → grpc::Status mapping: every canonical code and its message carried over.
#include "daemon/rpc/grpc_status.h"

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

namespace belay::rpc {
namespace {

TEST(GrpcStatus, OkMapsToOkWithoutMessage) {
  grpc::Status s = ToGrpc(absl::OkStatus());
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.error_code(), grpc::StatusCode::OK);
  EXPECT_EQ(s.error_message(), "");
}

TEST(GrpcStatus, EveryCanonicalCodeMapsToTheSameGrpcCodeWithItsMessage) {
  const std::vector<std::pair<absl::StatusCode, grpc::StatusCode>> codes = {
      {absl::StatusCode::kCancelled, grpc::StatusCode::CANCELLED},
      {absl::StatusCode::kUnknown, grpc::StatusCode::UNKNOWN},
      {absl::StatusCode::kInvalidArgument, grpc::StatusCode::INVALID_ARGUMENT},
      {absl::StatusCode::kDeadlineExceeded, grpc::StatusCode::DEADLINE_EXCEEDED},
      {absl::StatusCode::kNotFound, grpc::StatusCode::NOT_FOUND},
      {absl::StatusCode::kAlreadyExists, grpc::StatusCode::ALREADY_EXISTS},
      {absl::StatusCode::kPermissionDenied, grpc::StatusCode::PERMISSION_DENIED},
      {absl::StatusCode::kResourceExhausted, grpc::StatusCode::RESOURCE_EXHAUSTED},
      {absl::StatusCode::kFailedPrecondition, grpc::StatusCode::FAILED_PRECONDITION},
      {absl::StatusCode::kAborted, grpc::StatusCode::ABORTED},
      {absl::StatusCode::kOutOfRange, grpc::StatusCode::OUT_OF_RANGE},
      {absl::StatusCode::kUnimplemented, grpc::StatusCode::UNIMPLEMENTED},
      {absl::StatusCode::kInternal, grpc::StatusCode::INTERNAL},
      {absl::StatusCode::kUnavailable, grpc::StatusCode::UNAVAILABLE},
      {absl::StatusCode::kDataLoss, grpc::StatusCode::DATA_LOSS},
      {absl::StatusCode::kUnauthenticated, grpc::StatusCode::UNAUTHENTICATED},
  };
  for (const auto& [absl_code, grpc_code] : codes) {
    const std::string message = "campaign \"c1\": " + absl::StatusCodeToString(absl_code);
    grpc::Status s = ToGrpc(absl::Status(absl_code, message));
    EXPECT_FALSE(s.ok()) << message;
    EXPECT_EQ(s.error_code(), grpc_code) << message;
    EXPECT_EQ(s.error_message(), message);
  }
}

TEST(GrpcStatus, MessageBytesCarriedUnchanged) {
  const std::string message("bad\0byte \xff and a newline\n", 24);
  grpc::Status s = ToGrpc(absl::InvalidArgumentError(message));
  EXPECT_EQ(s.error_message(), message);
}

}  // namespace
}  // namespace belay::rpc
