// A Scheduler for the supervisor's tests: jobs do nothing until the test ends them, with any
// rank exits and scheduler end reason; submissions and signals are recorded; faults are
// injected by flag.
#pragma once

#include <map>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "daemon/scheduler/scheduler.h"

namespace belay::sched {

class FakeScheduler final : public Scheduler {
 public:
  pb::SchedulerKind kind() const override { return pb::SCHEDULER_KIND_LOCAL; }
  absl::StatusOr<std::string> Submit(const JobSpec& job) override;
  absl::StatusOr<std::vector<JobStatus>> Poll(const std::vector<std::string>& job_ids) override;
  absl::Status Signal(const std::string& job_id, int signal) override;

  // --- Test controls.
  // Ends a job: every rank exits with `exit_code` unless `ranks` says otherwise.
  void End(const std::string& job_id, std::vector<RankEnd> ranks = {}, int exit_code = 0,
           pb::EndReason reason = pb::END_REASON_UNSPECIFIED, std::string message = "");
  // The next Submit fails with `error`; the next Poll fails with `poll_error`.
  void FailNextSubmit(absl::Status error) { submit_error_ = std::move(error); }
  void FailNextPoll(absl::Status error) { poll_error_ = std::move(error); }
  // Every Poll that asks about `job_id` fails with `error` until called again with OK.
  // What NodeStates returns.
  void SetNodeStates(std::vector<NodeState> nodes) { node_states_ = std::move(nodes); }
  absl::StatusOr<std::vector<NodeState>> NodeStates() override { return node_states_; }
  void FailPollsOf(const std::string& job_id, absl::Status error) {
    failing_jobs_[job_id] = std::move(error);
  }
  // New jobs start kQueued instead of kRunning until set back.
  void set_start_queued(bool queued) { start_queued_ = queued; }
  void SetState(const std::string& job_id, JobState state) { jobs_[job_id].status.state = state; }
  // The nodes the job's status names (running: where it runs; ended by a node failure: the
  // failed ones, as SlurmScheduler reports them).
  void SetNodes(const std::string& job_id, std::vector<std::string> nodes) {
    jobs_[job_id].status.nodes = std::move(nodes);
  }
  // SIGKILL ends a job (every rank killed by signal 9) as a real one would; on by default.
  void set_kill_ends_job(bool v) { kill_ends_job_ = v; }
  // Forgets a job (a scheduler that lost it).
  void Forget(const std::string& job_id) { jobs_.erase(job_id); }

  const std::vector<JobSpec>& submitted() const { return submitted_; }
  const std::vector<std::pair<std::string, int>>& signals() const { return signals_; }
  int polls() const { return polls_; }

 private:
  struct Job {
    JobSpec spec;
    JobStatus status;
  };
  std::map<std::string, Job> jobs_;
  std::map<std::tuple<std::string, int32_t, std::string>, std::string>
      by_key_;  // campaign, attempt, token
  std::vector<JobSpec> submitted_;
  std::vector<std::pair<std::string, int>> signals_;
  absl::Status submit_error_, poll_error_;
  std::map<std::string, absl::Status> failing_jobs_;
  std::vector<NodeState> node_states_;
  bool start_queued_ = false;
  bool kill_ends_job_ = true;
  int polls_ = 0;
};

}  // namespace belay::sched
