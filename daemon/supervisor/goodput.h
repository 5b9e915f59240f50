// The goodput ledger of a campaign: where its rank-hours went. Computed from the attempts'
// records (times, steps, end reasons) whenever asked; nothing of it is stored separately.
#pragma once

#include <chrono>
#include <vector>

#include "belay/v1/types.pb.h"
#include "common/clock.h"

namespace belay::supervisor {

namespace pb = ::belay::v1;

// Rank-hours are wall time × ranks. Per incident (an attempt that ended other than completed
// or cancelled):
//   failure time   the attempt's last step report (its end, if it never reported one)
//   detection      its end
//   lost steps     its last step minus the checkpoint the next attempt resumed from (or minus
//                  where it started, when the next has not been planned yet)
//   lost work      lost steps × its mean step time × ranks
//   detection cost (detection − failure) × ranks
//   restart cost   the next attempt's start → first step report, × ranks
//   downtime       failure → the next attempt's first step report
// Checkpoint cost = Σ over the checkpoints' shards of the time the save held that rank's
// training up (CheckpointShard.blocked_time_s, as the ranks report it; saves that failed, and
// saves of a step whose record a later save of the same step replaced, are not in it).
// Summary: spent = Σ attempts (start → end, or now while running) × ranks; productive =
// spent − lost work − detection − restart − checkpoint costs; goodput = productive / spent.
pb::GoodputLedger ComputeGoodput(const std::vector<pb::Attempt>& attempts,
                                 const std::vector<pb::Checkpoint>& checkpoints, TimePoint now);

// checkpoint.every_steps = "auto": the mean time between failures a campaign's next attempt
// saves for, from its ended attempts' records:
//   (prior + Σ their start → end) / (1 + the failures that lost work)
// where the failures are attempts that ended by node failure, rank crash, hang, running out
// of memory or preemption (not completed, time limit, cancelled, nan or loss spike). `prior`
// counts as one stretch without a failure before the campaign: a young campaign saves for it,
// and the campaign's own record takes over as it grows. At least one second.
std::chrono::seconds EstimateMtbf(const std::vector<pb::Attempt>& attempts,
                                  std::chrono::seconds prior);

}  // namespace belay::supervisor
