// The Slurm backend: attempts as batch jobs, through libslurm (Slurm 22.05's API). See
// docs/slurm.md.
//
//  - Submit: one batch job per attempt (slurm_script.h) with --no-requeue (belay decides
//    restarts), the pre-limit signal B:USR1@N, --exclude, the campaign's partition, account
//    and time limit, and the comment "belay:campaign=<id>:attempt=<n>". Idempotent: a job of
//    this scheduler's user with that comment that has not ended is returned instead of
//    submitting another (a belayd that crashed before recording the id finds it).
//  - Poll: one load of all jobs per call at most, and not more often than min_poll_interval
//    (a cached load answers in between; a Submit or Signal makes the next Poll load afresh).
//  - Every libslurm call counts against rpc_budget_per_minute; beyond it, and for a backoff
//    after a failed call (doubling to max_backoff), calls are refused with Unavailable
//    without reaching slurmctld, so belay never hammers a slow or down controller.
//  - Rank ends come from the rank wrapper's exit files in the job's log directory (which is
//    the job's working directory, on a filesystem the nodes and belayd share).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "daemon/scheduler/scheduler.h"

struct partition_info_msg;  // slurm/slurm.h

namespace belay::sched {

struct SlurmSchedulerOptions {
  std::string conf;  // slurm.conf; empty: libslurm's default (SLURM_CONF or the built-in path)
  std::string partition;
  std::string account;
  std::string mpirun = "mpirun";
  // Added to every job's environment (e.g. Open MPI transport settings for the site).
  std::vector<std::pair<std::string, std::string>> mpi_env;
  std::chrono::seconds pre_limit_signal{300};  // USR1 to the batch shell this long before the limit
  std::chrono::milliseconds min_poll_interval{2000};
  int rpc_budget_per_minute = 120;
  std::chrono::milliseconds max_backoff{60'000};
};

class SlurmScheduler final : public Scheduler {
 public:
  explicit SlurmScheduler(SlurmSchedulerOptions options);
  ~SlurmScheduler() override;
  SlurmScheduler(const SlurmScheduler&) = delete;
  SlurmScheduler& operator=(const SlurmScheduler&) = delete;

  pb::SchedulerKind kind() const override { return pb::SCHEDULER_KIND_SLURM; }
  absl::StatusOr<std::string> Submit(const JobSpec& job) override;
  absl::StatusOr<std::vector<JobStatus>> Poll(const std::vector<std::string>& job_ids) override;
  absl::Status Signal(const std::string& job_id, int signal) override;

  // libslurm calls made so far (each one RPC to slurmctld), and those refused by the budget
  // or a backoff without reaching it.
  int64_t rpcs() const { return rpcs_.load(); }
  int64_t refused() const { return refused_.load(); }
  ControllerCalls controller_calls() const override { return {rpcs_.load(), refused_.load()}; }
  absl::StatusOr<std::vector<NodeState>> NodeStates() override;

 private:
  // One job as the last load saw it.
  struct Seen {
    uint32_t job_state = 0;
    std::string comment;
    std::string nodes;
    std::string work_dir;
    uint32_t num_tasks = 0;
    std::string reason;  // state_desc, or Slurm's reason code
    uint32_t user_id = 0;
  };

  // Permission for one libslurm call: Unavailable while backing off or over budget.
  absl::Status Admit();
  void Succeeded();
  absl::Status Failed(std::string what);
  absl::Status Load(bool fresh);
  // The cluster's partitions, loaded at most every 10 minutes (they rarely change); null
  // while they could not be loaded yet.
  partition_info_msg* Partitions();

  SlurmSchedulerOptions options_;
  std::map<uint32_t, Seen> jobs_;  // the last load
  std::chrono::steady_clock::time_point loaded_at_{};
  bool stale_ = true;
  std::deque<std::chrono::steady_clock::time_point> recent_;  // calls in the last minute
  std::chrono::steady_clock::time_point backoff_until_{};
  std::chrono::milliseconds backoff_{0};
  std::atomic<int64_t> rpcs_{0};  // read by other threads (controller_calls)
  std::atomic<int64_t> refused_{0};
  std::unique_ptr<partition_info_msg, void (*)(partition_info_msg*)> partitions_{nullptr, nullptr};
  std::optional<std::chrono::steady_clock::time_point> partitions_at_;
};

}  // namespace belay::sched
