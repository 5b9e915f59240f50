// FakeScheduler: jobs in a map, ended by the test.
#include "daemon/scheduler/fake_scheduler.h"

#include <signal.h>

#include "common/strings.h"

namespace belay::sched {

absl::StatusOr<std::string> FakeScheduler::Submit(const JobSpec& job) {
  if (!submit_error_.ok()) {
    absl::Status e = std::move(submit_error_);
    submit_error_ = absl::OkStatus();
    return e;
  }
  std::string token;
  for (const auto& [k, v] : job.env) {
    if (k == "BELAY_TOKEN") token = v;
  }
  auto key = std::tuple{job.campaign_id, job.attempt, token};
  if (auto it = by_key_.find(key); it != by_key_.end()) return it->second;
  const std::string id = Cat("fake-", submitted_.size() + 1);
  submitted_.push_back(job);
  Job j;
  j.spec = job;
  j.status.job_id = id;
  j.status.state = start_queued_ ? JobState::kQueued : JobState::kRunning;
  j.status.nodes = {"fake-node-0"};
  jobs_[id] = std::move(j);
  by_key_[key] = id;
  return id;
}

absl::StatusOr<std::vector<JobStatus>> FakeScheduler::Poll(const std::vector<std::string>& ids) {
  ++polls_;
  if (!poll_error_.ok()) {
    absl::Status e = std::move(poll_error_);
    poll_error_ = absl::OkStatus();
    return e;
  }
  for (const std::string& id : ids) {
    auto f = failing_jobs_.find(id);
    if (f != failing_jobs_.end() && !f->second.ok()) return f->second;
  }
  std::vector<JobStatus> out;
  for (const std::string& id : ids) {
    auto it = jobs_.find(id);
    if (it == jobs_.end()) {
      JobStatus s;
      s.job_id = id;
      s.state = JobState::kUnknown;
      s.message = "no such job";
      out.push_back(s);
    } else {
      out.push_back(it->second.status);
    }
  }
  return out;
}

absl::Status FakeScheduler::Signal(const std::string& id, int signal) {
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return absl::NotFoundError(Cat("no job ", id));
  signals_.push_back({id, signal});
  if (signal == SIGKILL && kill_ends_job_ && it->second.status.state != JobState::kEnded) {
    std::vector<RankEnd> ranks;
    for (int r = 0; r < it->second.spec.world_size; ++r)
      ranks.push_back({r, std::nullopt, SIGKILL, "fake-node-0"});
    End(id, ranks);
  }
  return absl::OkStatus();
}

void FakeScheduler::End(const std::string& id, std::vector<RankEnd> ranks, int exit_code,
                        pb::EndReason reason, std::string message) {
  Job& j = jobs_[id];
  if (ranks.empty()) {
    for (int r = 0; r < j.spec.world_size; ++r) ranks.push_back({r, exit_code, 0, "fake-node-0"});
  }
  j.status.state = JobState::kEnded;
  j.status.ranks = std::move(ranks);
  j.status.reason = reason;
  j.status.message = std::move(message);
}

}  // namespace belay::sched
