// The attempt monitor: what belayd knows of a running attempt between its store writes —
// the ranks' heartbeats, the pace of its step reports (for hang_timeout = "auto"), the
// ranks' summed compute times (slow ranks), the progress not yet written, and the last step
// reports whole (evidence of a failure). Kept in memory; after a restart of belayd the pace
// and the slow-rank sums are rebuilt from the store.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "belay/v1/types.pb.h"
#include "common/clock.h"
#include "common/mutex.h"
#include "daemon/store/store.h"

namespace belay::supervisor {

namespace pb = ::belay::v1;

struct MonitorOptions {
  // hang_timeout = "auto" (policy.h AutoHangTimeout).
  std::chrono::seconds default_hang_timeout{600};
  std::chrono::seconds auto_hang_floor{180};
  // How often the slow-rank sums are written (RankTimeSums) and the attempt record is
  // rewritten for its progress, at most.
  std::chrono::seconds rank_sums_interval{60};
  std::chrono::seconds attempt_write_interval{10};
  // The last this many step reports with per-rank arrays are kept as evidence.
  size_t evidence_steps = 4;
};

// Thread-safe. Heartbeats take a lock of their own, so that they never wait for a round.
class AttemptMonitor {
 public:
  AttemptMonitor(const store::Store& store, const Clock& clock, MonitorOptions options)
      : store_(store), clock_(clock), options_(options) {}

  // A rank's heartbeat.
  void OnHeartbeat(const std::string& campaign_id, int32_t attempt, int32_t rank, int64_t step,
                   pb::WorkerPhase phase) ABSL_LOCKS_EXCLUDED(beats_mu_);

  // A step report `m` of attempt `a` (its last_step already counting `m`), now: the pace and
  // the progress, and the slow-rank sums into `b` when they are due.
  void OnStep(store::WriteBatch& b, const std::string& campaign_id, const pb::Attempt& a,
              const pb::StepMetrics& m) ABSL_LOCKS_EXCLUDED(mu_);
  // Whether the attempt record is to be written with this step report (`changed`: more than
  // its progress changed, or attempt_write_interval passed); if so it counts as written now.
  bool AttemptRecordDue(const std::string& campaign_id, int32_t attempt, bool changed)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Keeps `m` (with its per-rank arrays) among the attempt's last evidence_steps reports.
  void KeepEvidence(const std::string& campaign_id, int32_t attempt, pb::StepMetrics m)
      ABSL_LOCKS_EXCLUDED(mu_);

  // `a` (as read from the store) with the latest progress reported, written or not.
  void ShowProgress(const std::string& campaign_id, pb::Attempt& a) const ABSL_LOCKS_EXCLUDED(mu_);
  // The hang timeout of attempt `a`: `fixed` if the campaign sets one, else from its pace.
  std::chrono::seconds HangTimeout(const std::string& campaign_id, const pb::Attempt& a,
                                   std::optional<std::chrono::seconds> fixed)
      ABSL_LOCKS_EXCLUDED(mu_, beats_mu_);
  // The hang timeout attempt `a` (RUNNING) has gone past without step progress, counting only
  // time since `watching_since` (while belayd was down — a restart, an upgrade — the ranks'
  // reports had nowhere to go, and they resend them once it is back); nullopt if none.
  std::optional<std::chrono::seconds> Overdue(const std::string& campaign_id, const pb::Attempt& a,
                                              std::optional<std::chrono::seconds> fixed,
                                              TimePoint watching_since)
      ABSL_LOCKS_EXCLUDED(mu_, beats_mu_);
  // "rank 0: step 57, backward, 12 s ago; ..." for the ranks furthest behind.
  std::string DescribeRanks(const std::string& campaign_id, int32_t attempt) const
      ABSL_LOCKS_EXCLUDED(beats_mu_);
  // Each rank's mean compute time per step over attempt `a`, when at least `min_steps` steps
  // reported every rank's; empty otherwise.
  std::vector<double> RankMeans(const std::string& campaign_id, const pb::Attempt& a,
                                int64_t min_steps) ABSL_LOCKS_EXCLUDED(mu_);

  // Attempt `attempt` ended: its slow-rank sums, and with `incident` its last step reports
  // whole, into `b`; what was kept of it goes.
  void EndOf(store::WriteBatch& b, const std::string& campaign_id, int32_t attempt, bool incident)
      ABSL_LOCKS_EXCLUDED(mu_, beats_mu_);

 private:
  struct Beat {
    int64_t step = 0;
    pb::WorkerPhase phase = pb::WORKER_PHASE_UNSPECIFIED;
    TimePoint time;
  };
  // Per (campaign, attempt): recent step times and the longest gap between step reports, and
  // the ranks' compute times for slow-rank detection.
  struct Pace {
    int64_t steps = 0;
    std::vector<double> recent;  // ring of the last kPaceWindow step times
    size_t next = 0;
    TimePoint last_report;
    double longest_gap_s = 0;
    // Sum of each rank's compute time over the steps that reported every rank's, and when it
    // was last written to the store (RankTimeSums).
    std::vector<double> rank_time_sum;
    int64_t rank_time_steps = 0;
    int64_t rank_time_through = 0;
    std::optional<TimePoint> sums_written;
    // The progress as last reported (not yet written while attempt_written is less than
    // attempt_write_interval ago).
    int64_t progress_step = 0;
    std::optional<TimePoint> progress_time;
    std::optional<TimePoint> attempt_written;
    // The last evidence_steps step reports with their per-rank arrays (not rebuilt after a
    // restart: the store has only summaries).
    std::deque<pb::StepMetrics> last_reports;
  };
  using Key = std::pair<std::string, int32_t>;

  // The pace of attempt `a`: from memory, or rebuilt from its step reports.
  Pace& PaceOf(const std::string& campaign_id, const pb::Attempt& a)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static void AddToPace(Pace& p, const pb::StepMetrics& m, TimePoint at, int32_t world_size);
  static void PutRankTimeSums(store::WriteBatch& b, const std::string& campaign_id, int32_t attempt,
                              const Pace& p);

  const store::Store& store_;
  const Clock& clock_;
  const MonitorOptions options_;

  mutable Mutex mu_;
  std::map<Key, Pace> pace_ ABSL_GUARDED_BY(mu_);
  mutable Mutex beats_mu_;
  std::map<Key, std::map<int32_t, Beat>> beats_ ABSL_GUARDED_BY(beats_mu_);
};

}  // namespace belay::supervisor
