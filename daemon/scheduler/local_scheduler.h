// The local process backend: an attempt's ranks run as processes on this machine, in a
// session of their own (so they outlive a belayd restart and can be signalled as one group).
// One rank runs directly; several run under Open MPI's mpirun, which gives them their ranks.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "daemon/scheduler/scheduler.h"

namespace belay::sched {

// Open MPI settings for CPU ranks on one machine: the one-node profile of
// scripts/mpi-sandbox.conf (mpi_sandbox.h): run as root when that is who runs belayd, shared
// memory without cross-memory attach, loopback only, oversubscription allowed.
std::vector<std::pair<std::string, std::string>> DefaultMpiEnvironment();

struct LocalSchedulerOptions {
  // Where job records live (one small file per job), so that a restarted belayd can poll and
  // signal the jobs an earlier one started. Created if missing.
  std::filesystem::path jobs_dir;
  // The launcher of jobs with more than one rank (a path, or a name looked up in PATH).
  std::string mpirun = "mpirun";
  // Added to the environment of jobs with more than one rank.
  std::vector<std::pair<std::string, std::string>> mpi_env = DefaultMpiEnvironment();
  // util-linux's setpriv, which starts a job that runs as another user (JobSpec::run_as_uid)
  // with that user's uid, groups and supplementary groups.
  std::string setpriv = "setpriv";
};

// Job ids are "<pid>-<start time>" of the job's leader process (the rank of a one-rank job,
// mpirun otherwise); the start time (clock ticks after boot, /proc/<pid>/stat) keeps a reused
// pid from being mistaken for the job.
//
// Every rank runs under a small shell wrapper that sends its output to
// <log_dir>/rank_<r>.log and, when it ends, writes its exit status to rank_<r>.exit; a status
// above 128 is reported as the signal (status − 128) that killed the rank, the shell's
// convention. The leader's own output goes to <log_dir>/launcher.log. Ranks get
// BELAY_LOG_DIR, and a one-rank job BELAY_RANK=0, BELAY_WORLD_SIZE=1, BELAY_LOCAL_RANK=0
// (mpirun gives its ranks their own variables; belay's are then not set). The daemon's own
// SLURM_*, OMPI_*, PMIX_* and BELAY_* variables are not passed on, except BELAY_FAULT_* (the
// worker's fault injection for tests). Signal reaches
// every process of the job's session (the leader, mpirun's ranks and their wrappers).
class LocalScheduler final : public Scheduler {
 public:
  explicit LocalScheduler(LocalSchedulerOptions options);
  // Leaves running jobs running (a restarted belayd re-adopts them).
  ~LocalScheduler() override = default;

  pb::SchedulerKind kind() const override { return pb::SCHEDULER_KIND_LOCAL; }
  absl::StatusOr<std::string> Submit(const JobSpec& job) override;
  absl::StatusOr<std::vector<JobStatus>> Poll(const std::vector<std::string>& job_ids) override;
  absl::Status Signal(const std::string& job_id, int signal) override;

 private:
  struct Record {
    std::filesystem::path log_dir;
    int world_size = 1;
    pid_t pid = 0;
    unsigned long long start_ticks = 0;
    std::optional<int> wait_status;  // the leader's, once reaped
  };

  absl::StatusOr<Record*> Find(const std::string& job_id);
  absl::Status Save(const std::string& job_id, const Record& record) const;
  // Whether the leader still runs; reaps it (and records how it ended) if it is our child.
  bool LeaderRunning(const std::string& job_id, Record& record);
  JobStatus Ended(const std::string& job_id, const Record& record) const;

  LocalSchedulerOptions options_;
  std::map<std::string, Record> jobs_;  // loaded on first use
  std::set<pid_t> children_;            // leaders this object started and has not reaped
};

}  // namespace belay::sched
