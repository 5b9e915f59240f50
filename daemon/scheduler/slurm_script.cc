// Slurm batch script, job comment and job-state meaning: see slurm_script.h.
#include "daemon/scheduler/slurm_script.h"

#include <charconv>

#include "common/checksum.h"
#include "common/strings.h"
#include "daemon/scheduler/rank_files.h"
#include "slurm/slurm.h"

namespace belay::sched {

std::string SlurmJobComment(const std::string& campaign_id, int32_t attempt,
                            std::string_view token) {
  return Cat("belay:campaign=", campaign_id, ":attempt=", attempt,
             ":key=", FormatXxh3(Xxh3(token)));
}

std::optional<SlurmJobTag> ParseSlurmJobComment(std::string_view c) {
  constexpr std::string_view kPrefix = "belay:campaign=", kAttempt = ":attempt=", kKey = ":key=";
  if (!c.starts_with(kPrefix)) return std::nullopt;
  c.remove_prefix(kPrefix.size());
  const size_t at = c.find(kAttempt);
  if (at == std::string_view::npos || at == 0) return std::nullopt;
  SlurmJobTag tag;
  tag.campaign_id = std::string(c.substr(0, at));
  c.remove_prefix(at + kAttempt.size());
  const size_t k = c.find(kKey);
  if (k == std::string_view::npos) return std::nullopt;
  const std::string_view num = c.substr(0, k);
  auto [end, ec] = std::from_chars(num.data(), num.data() + num.size(), tag.attempt);
  if (ec != std::errc() || end != num.data() + num.size() || tag.attempt < 1) return std::nullopt;
  tag.key = std::string(c.substr(k + kKey.size()));
  if (tag.key.size() != 16 || tag.key.find_first_not_of("0123456789abcdef") != std::string::npos)
    return std::nullopt;
  return tag;
}

std::string ShellQuote(std::string_view text) {
  std::string out = "'";
  for (char c : text) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out.push_back(c);
    }
  }
  out.push_back('\'');
  return out;
}

std::string SlurmBatchScript(const JobSpec& job, const std::string& mpirun) {
  std::string s = "#!/bin/sh\n";
  s += Cat("# belay: campaign ", job.campaign_id, ", attempt ", job.attempt, ": ", job.world_size,
           " ranks, ", job.ranks_per_node, " per node. Written by belayd.\n");
  s += Cat("export BELAY_LOG_DIR=", ShellQuote(job.log_dir.string()), "\n");
  if (!job.work_dir.empty()) s += Cat("cd ", ShellQuote(job.work_dir.string()), " || exit 1\n");
  // Signals for the ranks go through mpirun; `wait` returns early when a trap runs, so it is
  // repeated until mpirun has really ended.
  s += "trap 'kill -USR1 \"$child\" 2>/dev/null' USR1\n";
  s += "trap 'kill -TERM \"$child\" 2>/dev/null' TERM\n";
  if (job.srun || job.gpus_per_node > 0) {
    // One task per rank (per GPU), no MPI: the ranks find each other through belayd (NCCL's
    // id in its rendezvous). srun passes the signals on to every task and ends the step when
    // a task fails.
    s += Cat("srun --mpi=none --kill-on-bad-exit=1 --ntasks=", job.world_size,
             " --ntasks-per-node=", job.ranks_per_node, " /bin/sh -c ", ShellQuote(kRankWrapper),
             " belay-rank");
  } else {
    s += Cat(ShellQuote(mpirun), " -np ", job.world_size, " /bin/sh -c ", ShellQuote(kRankWrapper),
             " belay-rank");
  }
  for (const std::string& a : job.command) s += Cat(" ", ShellQuote(a));
  s += " &\n";
  s += "child=$!\n";
  s += "while :; do\n  wait \"$child\"\n  status=$?\n  kill -0 \"$child\" 2>/dev/null || "
       "break\ndone\n";
  s += "exit \"$status\"\n";
  return s;
}

SlurmStateMeaning MeaningOfSlurmState(uint32_t job_state) {
  SlurmStateMeaning m;
  const uint32_t base = job_state & JOB_STATE_BASE;
  const bool completing = (job_state & JOB_COMPLETING) != 0;
  switch (base) {
    case JOB_PENDING:
      m = {JobState::kQueued, pb::END_REASON_UNSPECIFIED, "PENDING"};
      break;
    case JOB_RUNNING:
      m = {JobState::kRunning, pb::END_REASON_UNSPECIFIED, "RUNNING"};
      break;
    case JOB_SUSPENDED:
      m = {JobState::kRunning, pb::END_REASON_UNSPECIFIED, "SUSPENDED"};
      break;
    case JOB_COMPLETE:
      m = {JobState::kEnded, pb::END_REASON_UNSPECIFIED, "COMPLETED"};
      break;
    case JOB_FAILED:
      m = {JobState::kEnded, pb::END_REASON_UNSPECIFIED, "FAILED"};
      break;
    case JOB_CANCELLED:
      m = {JobState::kEnded, pb::END_REASON_CANCELLED_EXTERNALLY, "CANCELLED"};
      break;
    case JOB_TIMEOUT:
      m = {JobState::kEnded, pb::END_REASON_TIME_LIMIT, "TIMEOUT"};
      break;
    case JOB_NODE_FAIL:
      m = {JobState::kEnded, pb::END_REASON_NODE_FAILURE, "NODE_FAIL"};
      break;
    case JOB_PREEMPTED:
      m = {JobState::kEnded, pb::END_REASON_PREEMPTED, "PREEMPTED"};
      break;
    case JOB_BOOT_FAIL:
      m = {JobState::kEnded, pb::END_REASON_NODE_FAILURE, "BOOT_FAIL"};
      break;
    case JOB_DEADLINE:
      m = {JobState::kEnded, pb::END_REASON_TIME_LIMIT, "DEADLINE"};
      break;
    case JOB_OOM:
      m = {JobState::kEnded, pb::END_REASON_OUT_OF_MEMORY, "OUT_OF_MEMORY"};
      break;
    default:
      m = {JobState::kUnknown, pb::END_REASON_UNSPECIFIED, Cat("state ", base)};
      break;
  }
  if (completing && m.state == JobState::kEnded) {
    m.state = JobState::kRunning;  // its processes are still being cleaned up
    m.name += "+COMPLETING";
  }
  return m;
}

std::string SlurmNodeStateName(uint32_t node_state) {
  std::string name;
  switch (node_state & NODE_STATE_BASE) {
    case NODE_STATE_UNKNOWN:
      name = "UNKNOWN";
      break;
    case NODE_STATE_DOWN:
      name = "DOWN";
      break;
    case NODE_STATE_IDLE:
      name = "IDLE";
      break;
    case NODE_STATE_ALLOCATED:
      name = "ALLOCATED";
      break;
    case NODE_STATE_ERROR:
      name = "ERROR";
      break;
    case NODE_STATE_MIXED:
      name = "MIXED";
      break;
    case NODE_STATE_FUTURE:
      name = "FUTURE";
      break;
    default:
      name = Cat("STATE", node_state & NODE_STATE_BASE);
      break;
  }
  if ((node_state & NODE_STATE_DRAIN) != 0) name += "+DRAIN";
  if ((node_state & NODE_STATE_FAIL) != 0) name += "+FAIL";
  if ((node_state & NODE_STATE_NO_RESPOND) != 0) name += "*";
  return name;
}

}  // namespace belay::sched
