// RoutingScheduler: see routing_scheduler.h.
#include "daemon/scheduler/routing_scheduler.h"

#include "common/strings.h"

namespace belay::sched {

RoutingScheduler::RoutingScheduler(std::unique_ptr<Scheduler> local, Factory make_slurm)
    : local_(std::move(local)), make_slurm_(std::move(make_slurm)) {}

absl::StatusOr<Scheduler*> RoutingScheduler::Slurm() {
  if (slurm_ == nullptr) {
    if (!make_slurm_) return absl::FailedPreconditionError("this belayd has no Slurm backend");
    absl::StatusOr<std::unique_ptr<Scheduler>> made = make_slurm_();
    if (!made.ok()) return made.status();
    slurm_ = std::move(*made);
    slurm_view_.store(slurm_.get());
  }
  return slurm_.get();
}

absl::StatusOr<std::string> RoutingScheduler::Submit(const JobSpec& job) {
  if (job.kind != pb::SCHEDULER_KIND_SLURM) return local_->Submit(job);
  absl::StatusOr<Scheduler*> slurm = Slurm();
  if (!slurm.ok()) return slurm.status();
  absl::StatusOr<std::string> id;
  if (job.after_job.starts_with(kSlurmPrefix)) {
    JobSpec own = job;
    own.after_job = job.after_job.substr(kSlurmPrefix.size());
    id = (*slurm)->Submit(own);
  } else {
    id = (*slurm)->Submit(job);
  }
  if (!id.ok()) return id.status();
  return Cat(kSlurmPrefix, *id);
}

absl::StatusOr<std::vector<JobStatus>> RoutingScheduler::Poll(const std::vector<std::string>& ids) {
  std::vector<std::string> local_ids, slurm_ids;
  for (const std::string& id : ids) {
    if (id.starts_with(kSlurmPrefix)) {
      slurm_ids.push_back(id.substr(kSlurmPrefix.size()));
    } else {
      local_ids.push_back(id);
    }
  }
  std::vector<JobStatus> local, slurm;
  if (!local_ids.empty()) {
    absl::StatusOr<std::vector<JobStatus>> got = local_->Poll(local_ids);
    if (!got.ok()) return got.status();
    local = std::move(*got);
  }
  if (!slurm_ids.empty()) {
    absl::StatusOr<Scheduler*> s = Slurm();
    if (!s.ok()) return s.status();
    absl::StatusOr<std::vector<JobStatus>> got = (*s)->Poll(slurm_ids);
    if (!got.ok()) return got.status();
    slurm = std::move(*got);
  }
  // Back in the order asked, with the ids as given.
  std::vector<JobStatus> out;
  size_t li = 0, si = 0;
  for (const std::string& id : ids) {
    JobStatus st = id.starts_with(kSlurmPrefix) ? std::move(slurm[si++]) : std::move(local[li++]);
    st.job_id = id;
    out.push_back(std::move(st));
  }
  return out;
}

absl::Status RoutingScheduler::Signal(const std::string& id, int signal) {
  if (!id.starts_with(kSlurmPrefix)) return local_->Signal(id, signal);
  absl::StatusOr<Scheduler*> s = Slurm();
  if (!s.ok()) return s.status();
  return (*s)->Signal(id.substr(kSlurmPrefix.size()), signal);
}

ControllerCalls RoutingScheduler::controller_calls() const {
  const Scheduler* slurm = slurm_view_.load();
  return slurm != nullptr ? slurm->controller_calls() : ControllerCalls{};
}

absl::StatusOr<std::vector<NodeState>> RoutingScheduler::NodeStates() {
  if (slurm_ == nullptr) return std::vector<NodeState>{};
  return slurm_->NodeStates();
}

}  // namespace belay::sched
