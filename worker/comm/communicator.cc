// CommHandle: completing a pending collective exactly once; the host-memory OrderAfter.
#include "worker/comm/communicator.h"

namespace belay::comm {

CommHandle& CommHandle::operator=(CommHandle&& other) noexcept {
  if (this != &other) {
    // A pending collective being replaced must finish before its buffers can be reused.
    (void)Wait();
    pending_ = std::move(other.pending_);
    status_ = std::move(other.status_);
  }
  return *this;
}

CommHandle::~CommHandle() { (void)Wait(); }

absl::Status Communicator::OrderAfter(CUevent_st*) {
  return absl::FailedPreconditionError(
      "OrderAfter: this communicator takes host memory, not device memory");
}

absl::Status CommHandle::Wait() {
  if (pending_ != nullptr) {
    status_ = pending_->Wait();
    pending_.reset();
  }
  return status_;
}

}  // namespace belay::comm
