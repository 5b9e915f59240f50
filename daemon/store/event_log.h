// A campaign's event log as belayd appends to it: events numbered per campaign, put into the
// caller's write batch so that they are written with the transition they describe.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "belay/v1/types.pb.h"
#include "common/clock.h"
#include "common/mutex.h"
#include "daemon/store/store.h"

namespace belay::store {

namespace pb = ::belay::v1;

// Protobuf timestamps from and to the clock's time points.
void SetTime(google::protobuf::Timestamp* ts, TimePoint t);
TimePoint FromTimestamp(const google::protobuf::Timestamp& ts);

// Thread-safe. Sequence numbers handed out for a batch that is never written leave a gap;
// they are never reused, so events stay in order.
class EventLog {
 public:
  EventLog(const Store& store, const Clock& clock) : store_(store), clock_(clock) {}

  // Appends an event of campaign `c` (at its current step, now) to `batch`, numbered after
  // the campaign's last one (read from the store the first time). The store's read error.
  absl::Status Add(WriteBatch& batch, const pb::Campaign& c, pb::EventKind kind,
                   pb::Severity severity, std::string message, int32_t attempt = 0,
                   const std::vector<std::string>& nodes = {}) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  const Store& store_;
  const Clock& clock_;
  Mutex mu_;
  std::map<std::string, int64_t> next_seq_ ABSL_GUARDED_BY(mu_);  // by campaign
};

}  // namespace belay::store
