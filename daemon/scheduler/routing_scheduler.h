// Hands each job to the backend its campaign asks for (JobSpec::kind): the local process
// backend, or Slurm. Slurm job ids are returned as "slurm-<Slurm job id>" so that Poll and
// Signal find the backend from the id alone; local ids are passed through ("<pid>-<ticks>").
// The Slurm backend is created on first use (libslurm reads slurm.conf then), so a belayd on
// a machine without Slurm never touches it.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "daemon/scheduler/scheduler.h"

namespace belay::sched {

class RoutingScheduler final : public Scheduler {
 public:
  using Factory = std::function<absl::StatusOr<std::unique_ptr<Scheduler>>()>;
  RoutingScheduler(std::unique_ptr<Scheduler> local, Factory make_slurm);

  // The kind of the default backend (local).
  pb::SchedulerKind kind() const override { return pb::SCHEDULER_KIND_LOCAL; }
  absl::StatusOr<std::string> Submit(const JobSpec& job) override;
  absl::StatusOr<std::vector<JobStatus>> Poll(const std::vector<std::string>& job_ids) override;
  absl::Status Signal(const std::string& job_id, int signal) override;
  // The Slurm backend's, once it exists.
  ControllerCalls controller_calls() const override;
  // The Slurm backend's nodes, once it exists (it is not created for this).
  absl::StatusOr<std::vector<NodeState>> NodeStates() override;

  static constexpr std::string_view kSlurmPrefix = "slurm-";

 private:
  absl::StatusOr<Scheduler*> Slurm();

  std::unique_ptr<Scheduler> local_;
  Factory make_slurm_;
  std::unique_ptr<Scheduler> slurm_;
  std::atomic<const Scheduler*> slurm_view_{nullptr};  // slurm_, for other threads
};

}  // namespace belay::sched
