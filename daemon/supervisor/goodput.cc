// Goodput from attempt records.
#include "daemon/supervisor/goodput.h"

#include <algorithm>
#include <cmath>

#include "daemon/supervisor/supervisor.h"

namespace belay::supervisor {
namespace {

double Hours(TimePoint a, TimePoint b) {
  return std::max(0.0, std::chrono::duration<double>(b - a).count() / 3600.0);
}

}  // namespace

pb::GoodputLedger ComputeGoodput(const std::vector<pb::Attempt>& attempts,
                                 const std::vector<pb::Checkpoint>& checkpoints, TimePoint now) {
  pb::GoodputLedger ledger;
  pb::GoodputSummary& sum = *ledger.mutable_summary();
  for (size_t i = 0; i < attempts.size(); ++i) {
    const pb::Attempt& a = attempts[i];
    const double ranks = a.world_size();
    if (!a.has_start_time()) continue;
    const TimePoint start = FromTimestamp(a.start_time());
    const TimePoint end = a.has_end_time() ? FromTimestamp(a.end_time()) : now;
    sum.set_spent_rank_hours(sum.spent_rank_hours() + Hours(start, end) * ranks);
    if (a.state() != pb::ATTEMPT_STATE_ENDED || a.end_reason() == pb::END_REASON_COMPLETED ||
        a.end_reason() == pb::END_REASON_CANCELLED_BY_USER) {
      continue;
    }
    pb::GoodputIncident inc;
    inc.set_attempt_number(a.number());
    inc.set_end_reason(a.end_reason());
    const TimePoint failure =
        a.has_last_progress_time() ? FromTimestamp(a.last_progress_time()) : end;
    SetTime(inc.mutable_failure_time(), failure);
    SetTime(inc.mutable_detection_time(), end);
    inc.set_detection_rank_hours(Hours(failure, end) * ranks);
    const pb::Attempt* next = i + 1 < attempts.size() ? &attempts[i + 1] : nullptr;
    int64_t resumed_from = a.has_start_checkpoint_step() ? a.start_checkpoint_step() : 0;
    if (next != nullptr && next->has_start_checkpoint_step())
      resumed_from = next->start_checkpoint_step();
    if (next != nullptr && !next->has_start_checkpoint_step()) resumed_from = 0;
    inc.set_lost_steps(std::max<int64_t>(0, a.last_step() - resumed_from));
    if (a.has_first_step_time() && a.last_step() > a.first_step()) {
      const double step_h = Hours(FromTimestamp(a.first_step_time()), failure) /
                            static_cast<double>(a.last_step() - a.first_step());
      inc.set_lost_work_rank_hours(step_h * static_cast<double>(inc.lost_steps()) * ranks);
    }
    if (next != nullptr && next->has_start_time() && next->has_first_step_time()) {
      const TimePoint resumed = FromTimestamp(next->first_step_time());
      SetTime(inc.mutable_resumed_time(), resumed);
      inc.set_restart_rank_hours(Hours(FromTimestamp(next->start_time()), resumed) *
                                 next->world_size());
      inc.set_downtime_s(Hours(failure, resumed) * 3600.0);
    }
    sum.set_lost_work_rank_hours(sum.lost_work_rank_hours() + inc.lost_work_rank_hours());
    sum.set_detection_rank_hours(sum.detection_rank_hours() + inc.detection_rank_hours());
    sum.set_restart_rank_hours(sum.restart_rank_hours() + inc.restart_rank_hours());
    sum.set_incidents(sum.incidents() + 1);
    *ledger.add_incidents() = std::move(inc);
  }
  double blocked_s = 0;
  for (const pb::Checkpoint& ck : checkpoints) {
    for (const pb::CheckpointShard& sh : ck.shards()) {
      if (std::isfinite(sh.blocked_time_s()) && sh.blocked_time_s() > 0)
        blocked_s += sh.blocked_time_s();
    }
  }
  sum.set_checkpoint_rank_hours(blocked_s / 3600.0);
  sum.set_productive_rank_hours(std::max(
      0.0, sum.spent_rank_hours() - sum.lost_work_rank_hours() - sum.detection_rank_hours() -
               sum.restart_rank_hours() - sum.checkpoint_rank_hours()));
  sum.set_goodput_fraction(
      sum.spent_rank_hours() > 0 ? sum.productive_rank_hours() / sum.spent_rank_hours() : 0.0);
  return ledger;
}

std::chrono::seconds EstimateMtbf(const std::vector<pb::Attempt>& attempts,
                                  std::chrono::seconds prior) {
  double run_s = 0;
  int64_t failures = 0;
  for (const pb::Attempt& a : attempts) {
    if (a.state() != pb::ATTEMPT_STATE_ENDED || !a.has_start_time() || !a.has_end_time()) continue;
    run_s += std::max(0.0, std::chrono::duration<double>(FromTimestamp(a.end_time()) -
                                                         FromTimestamp(a.start_time()))
                               .count());
    switch (a.end_reason()) {
      case pb::END_REASON_NODE_FAILURE:
      case pb::END_REASON_RANK_CRASH:
      case pb::END_REASON_HANG:
      case pb::END_REASON_OUT_OF_MEMORY:
      case pb::END_REASON_PREEMPTED:
        ++failures;
        break;
      default:
        break;
    }
  }
  const double mtbf =
      (static_cast<double>(prior.count()) + run_s) / static_cast<double>(failures + 1);
  return std::chrono::seconds(std::max<int64_t>(1, std::llround(mtbf)));
}

}  // namespace belay::supervisor
