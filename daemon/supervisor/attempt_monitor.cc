// AttemptMonitor: heartbeats, pace and slow-rank sums in memory, rebuilt after a restart.
#include "daemon/supervisor/attempt_monitor.h"

#include <algorithm>
#include <limits>
#include <tuple>

#include "belay/v1/enum_names.h"
#include "common/strings.h"
#include "daemon/store/event_log.h"
#include "daemon/store/records.h"
#include "daemon/supervisor/policy.h"
#include "spdlog/spdlog.h"

namespace belay::supervisor {

using store::FromTimestamp;
using store::WriteBatch;

void AttemptMonitor::OnHeartbeat(const std::string& id, int32_t attempt, int32_t rank, int64_t step,
                                 pb::WorkerPhase phase) {
  MutexLock lock(&beats_mu_);
  beats_[{id, attempt}][rank] = Beat{step, phase, clock_.Now()};
}

void AttemptMonitor::OnStep(WriteBatch& b, const std::string& id, const pb::Attempt& a,
                            const pb::StepMetrics& m) {
  MutexLock lock(&mu_);
  const TimePoint now = clock_.Now();
  Pace& pace = PaceOf(id, a);
  pace.progress_step = a.last_step();
  pace.progress_time = now;
  AddToPace(pace, m, now, a.world_size());
  if (pace.rank_time_steps > 0 &&
      (!pace.sums_written || now - *pace.sums_written >= options_.rank_sums_interval)) {
    PutRankTimeSums(b, id, a.number(), pace);
    pace.sums_written = now;
  }
}

bool AttemptMonitor::AttemptRecordDue(const std::string& id, int32_t attempt, bool changed) {
  MutexLock lock(&mu_);
  Pace& pace = pace_[{id, attempt}];
  const TimePoint now = clock_.Now();
  if (!changed && pace.attempt_written &&
      now - *pace.attempt_written < options_.attempt_write_interval) {
    return false;
  }
  pace.attempt_written = now;
  return true;
}

void AttemptMonitor::KeepEvidence(const std::string& id, int32_t attempt, pb::StepMetrics m) {
  if (options_.evidence_steps == 0 ||
      (m.rank_step_time_s_size() == 0 && m.rank_compute_time_s_size() == 0)) {
    return;
  }
  MutexLock lock(&mu_);
  std::deque<pb::StepMetrics>& kept = pace_[{id, attempt}].last_reports;
  if (kept.size() >= options_.evidence_steps) kept.pop_front();
  kept.push_back(std::move(m));
}

void AttemptMonitor::ShowProgress(const std::string& id, pb::Attempt& a) const {
  MutexLock lock(&mu_);
  auto p = pace_.find({id, a.number()});
  if (p == pace_.end() || !p->second.progress_time) return;
  a.set_last_step(std::max(a.last_step(), p->second.progress_step));
  if (FromTimestamp(a.last_progress_time()) < *p->second.progress_time) {
    store::SetTime(a.mutable_last_progress_time(), *p->second.progress_time);
  }
}

void AttemptMonitor::AddToPace(Pace& p, const pb::StepMetrics& m, TimePoint at,
                               int32_t world_size) {
  // Gaps count once the attempt is past its first steps (start-up, warm-up are not repeated).
  if (p.steps >= kPaceSteps)
    p.longest_gap_s =
        std::max(p.longest_gap_s, std::chrono::duration<double>(at - p.last_report).count());
  p.last_report = at;
  ++p.steps;
  constexpr size_t kPaceWindow = 64;
  if (m.rank_compute_time_s_size() == world_size && world_size > 0) {
    p.rank_time_sum.resize(static_cast<size_t>(world_size), 0.0);
    for (int r = 0; r < world_size; ++r)
      p.rank_time_sum[static_cast<size_t>(r)] += m.rank_compute_time_s(r);
    ++p.rank_time_steps;
    p.rank_time_through = m.step();
  }
  if (p.recent.size() < kPaceWindow) {
    p.recent.push_back(m.step_time_s());
  } else {
    p.recent[p.next] = m.step_time_s();
    p.next = (p.next + 1) % kPaceWindow;
  }
}

AttemptMonitor::Pace& AttemptMonitor::PaceOf(const std::string& id, const pb::Attempt& a) {
  const Key key(id, a.number());
  if (auto it = pace_.find(key); it != pace_.end()) return it->second;
  Pace& p = pace_[key];
  // Not in memory: belayd was restarted while the attempt ran. Its step reports are in the
  // store, with the times they arrived: the same pace again, from the last kPaceRebuildSteps
  // of them (enough for the step-time window and the gaps, without reading a long attempt's
  // every report). The slow-rank sums come from their own record (stored step reports carry
  // no per-rank arrays, except those of an older belayd).
  constexpr size_t kPaceRebuildSteps = 2000;
  if (a.last_step() > 0) {
    absl::StatusOr<std::vector<pb::StepMetrics>> reported = store::ListStepMetrics(
        store_, id, a.first_step(), a.last_step() + 1, kPaceRebuildSteps, /*latest=*/true);
    if (reported.ok()) {
      for (const pb::StepMetrics& m : *reported) {
        if (m.attempt_number() == a.number() && m.has_time())
          AddToPace(p, m, FromTimestamp(m.time()), a.world_size());
      }
    } else {
      spdlog::warn(
          "campaign {}: the step reports of attempt {} cannot be read ({}); its pace starts over",
          id, a.number(), std::string(reported.status().message()));
    }
    absl::StatusOr<std::optional<pb::RankTimeSums>> sums =
        store::GetRankTimeSums(store_, id, a.number());
    if (!sums.ok()) {
      spdlog::warn(
          "campaign {}: the rank times of attempt {} cannot be read ({}); its slow-rank sums start "
          "over",
          id, a.number(), std::string(sums.status().message()));
    } else if (sums->has_value() && (*sums)->compute_time_sum_s_size() == a.world_size()) {
      p.rank_time_sum.assign((*sums)->compute_time_sum_s().begin(),
                             (*sums)->compute_time_sum_s().end());
      p.rank_time_steps = (*sums)->steps();
      p.rank_time_through = (*sums)->through_step();
    }
  }
  return p;
}

void AttemptMonitor::PutRankTimeSums(WriteBatch& b, const std::string& id, int32_t attempt,
                                     const Pace& p) {
  pb::RankTimeSums sums;
  sums.set_attempt_number(attempt);
  sums.set_steps(p.rank_time_steps);
  sums.set_through_step(p.rank_time_through);
  sums.mutable_compute_time_sum_s()->Add(p.rank_time_sum.begin(), p.rank_time_sum.end());
  store::Put(b, id, sums);
}

std::chrono::seconds AttemptMonitor::HangTimeout(const std::string& id, const pb::Attempt& a,
                                                 std::optional<std::chrono::seconds> fixed) {
  if (fixed) return *fixed;
  StepPace pace;
  {
    MutexLock lock(&mu_);
    const Pace& p = PaceOf(id, a);
    pace.steps = p.steps;
    pace.longest_gap_s = p.longest_gap_s;
    std::vector<double> sorted = p.recent;
    if (!sorted.empty()) {
      std::nth_element(sorted.begin(),
                       sorted.begin() + static_cast<std::ptrdiff_t>(sorted.size() / 2),
                       sorted.end());
      pace.median_step_s = sorted[sorted.size() / 2];
    }
  }
  {
    MutexLock lock(&beats_mu_);
    if (auto it = beats_.find({id, a.number()}); it != beats_.end()) {
      for (const auto& [rank, b] : it->second) {
        if (b.phase == pb::WORKER_PHASE_CHECKPOINT || b.phase == pb::WORKER_PHASE_EVAL)
          pace.busy_elsewhere = true;
      }
    }
  }
  return AutoHangTimeout(pace, {options_.default_hang_timeout, options_.auto_hang_floor});
}

std::optional<std::chrono::seconds> AttemptMonitor::Overdue(
    const std::string& id, const pb::Attempt& a, std::optional<std::chrono::seconds> fixed,
    TimePoint watching_since) {
  const std::chrono::seconds timeout = HangTimeout(id, a, fixed);
  TimePoint last = FromTimestamp(a.running_time());
  if (a.has_last_progress_time()) last = std::max(last, FromTimestamp(a.last_progress_time()));
  last = std::max(last, watching_since);
  if (clock_.Now() - last > timeout) return timeout;
  return std::nullopt;
}

std::string AttemptMonitor::DescribeRanks(const std::string& id, int32_t attempt) const {
  MutexLock lock(&beats_mu_);
  auto it = beats_.find({id, attempt});
  if (it == beats_.end()) return "no heartbeats received";
  // The ranks furthest behind (lowest step, then the oldest heartbeat), in rank order: the
  // description goes into the attempt record and an event, which must not grow with the world.
  constexpr size_t kDescribed = 16;
  std::vector<std::pair<int32_t, const Beat*>> ranks;
  for (const auto& [rank, b] : it->second) ranks.emplace_back(rank, &b);
  const size_t shown = std::min(ranks.size(), kDescribed);
  std::partial_sort(ranks.begin(), ranks.begin() + static_cast<std::ptrdiff_t>(shown), ranks.end(),
                    [](const auto& x, const auto& y) {
                      return std::tie(x.second->step, x.second->time, x.first) <
                             std::tie(y.second->step, y.second->time, y.first);
                    });
  int64_t rest_lo = std::numeric_limits<int64_t>::max(),
          rest_hi = std::numeric_limits<int64_t>::min();
  for (size_t i = shown; i < ranks.size(); ++i) {
    rest_lo = std::min(rest_lo, ranks[i].second->step);
    rest_hi = std::max(rest_hi, ranks[i].second->step);
  }
  ranks.resize(shown);
  std::sort(ranks.begin(), ranks.end());
  std::string out;
  const TimePoint now = clock_.Now();
  for (const auto& [rank, b] : ranks) {
    const std::string phase = pb::ShortName(b->phase);
    out += Cat(out.empty() ? "" : "; ", "rank ", rank, ": step ", b->step, ", ", phase, ", ",
               std::chrono::duration_cast<std::chrono::seconds>(now - b->time).count(), " s ago");
  }
  if (const size_t more = it->second.size() - shown; more > 0) {
    out +=
        Cat("; ", more, " more rank", more == 1 ? "" : "s", " at step",
            rest_lo == rest_hi ? " " : "s ", rest_lo, rest_lo == rest_hi ? "" : Cat("-", rest_hi));
  }
  return out;
}

std::vector<double> AttemptMonitor::RankMeans(const std::string& id, const pb::Attempt& a,
                                              int64_t min_steps) {
  MutexLock lock(&mu_);
  const Pace& p = PaceOf(id, a);
  std::vector<double> means;
  if (p.rank_time_steps < min_steps) return means;
  for (double sum : p.rank_time_sum) means.push_back(sum / static_cast<double>(p.rank_time_steps));
  return means;
}

void AttemptMonitor::EndOf(WriteBatch& b, const std::string& id, int32_t attempt, bool incident) {
  {
    MutexLock lock(&mu_);
    if (auto p = pace_.find({id, attempt}); p != pace_.end()) {
      if (p->second.rank_time_steps > 0) PutRankTimeSums(b, id, attempt, p->second);
      // The steps before a failure, with every rank's times, are the evidence worth keeping.
      if (incident) {
        for (const pb::StepMetrics& m : p->second.last_reports) store::PutStepEvidence(b, id, m);
      }
      pace_.erase(p);
    }
  }
  MutexLock lock(&beats_mu_);
  beats_.erase({id, attempt});
}

}  // namespace belay::supervisor
