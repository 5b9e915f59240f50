// EventLog: per-campaign sequence numbers over the events table.
#include "daemon/store/event_log.h"

#include "daemon/store/records.h"
#include "spdlog/spdlog.h"

namespace belay::store {

void SetTime(google::protobuf::Timestamp* ts, TimePoint t) {
  const auto ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  ts->set_seconds(ns / 1'000'000'000);
  ts->set_nanos(static_cast<int32_t>(ns % 1'000'000'000));
}

TimePoint FromTimestamp(const google::protobuf::Timestamp& ts) {
  return TimePoint(std::chrono::duration_cast<TimePoint::duration>(
      std::chrono::seconds(ts.seconds()) + std::chrono::nanoseconds(ts.nanos())));
}

absl::Status EventLog::Add(WriteBatch& batch, const pb::Campaign& c, pb::EventKind kind,
                           pb::Severity severity, std::string message, int32_t attempt,
                           const std::vector<std::string>& nodes) {
  pb::Event e;
  {
    MutexLock lock(&mu_);
    auto it = next_seq_.find(c.id());
    if (it == next_seq_.end()) {
      absl::StatusOr<int64_t> last = LastEventSeq(store_, c.id());
      if (!last.ok()) return last.status();
      it = next_seq_.emplace(c.id(), *last + 1).first;
    }
    e.set_seq(it->second++);
  }
  e.set_campaign_id(c.id());
  SetTime(e.mutable_time(), clock_.Now());
  e.set_attempt_number(attempt);
  for (const std::string& n : nodes) e.add_nodes(n);
  e.set_kind(kind);
  e.set_severity(severity);
  e.set_step(c.current_step());
  spdlog::info("campaign {}: {}", c.id(), message);
  e.set_message(std::move(message));
  Put(batch, e);
  return absl::OkStatus();
}

}  // namespace belay::store
