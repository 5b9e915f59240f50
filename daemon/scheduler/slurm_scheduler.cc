// SlurmScheduler: batch jobs through libslurm. See slurm_scheduler.h.
#include "daemon/scheduler/slurm_scheduler.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <memory>
#include <set>
#include <system_error>

#include "common/campaign_spec.h"
#include "common/strings.h"
#include "daemon/scheduler/rank_files.h"
#include "daemon/scheduler/slurm_script.h"
#include "slurm/slurm.h"
#include "slurm/slurm_errno.h"
#include "spdlog/spdlog.h"

namespace belay::sched {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// Errors of reaching slurmctld at all (down, restarting, overloaded), as opposed to its
// verdict on a request.
bool Unreachable(int err) {
  return (err >= SLURM_UNEXPECTED_MSG_ERROR && err < SLURM_UNEXPECTED_MSG_ERROR + 100) ||
         (err >= SLURMCTLD_COMMUNICATIONS_CONNECTION_ERROR &&
          err < SLURMCTLD_COMMUNICATIONS_CONNECTION_ERROR + 100) ||
         (err >= SLURM_PROTOCOL_SOCKET_IMPL_ZERO_RECV_LENGTH &&
          err < SLURM_PROTOCOL_SOCKET_IMPL_ZERO_RECV_LENGTH + 100) ||
         err == ESLURM_IN_STANDBY_MODE || err == EAGAIN || err == ETIMEDOUT;
}

std::string SlurmError() {
  const int err = slurm_get_errno();
  return Cat(slurm_strerror(err), " (", err, ")");
}

std::vector<std::string> ExpandHostlist(const std::string& nodes) {
  std::vector<std::string> out;
  if (nodes.empty()) return out;
  hostlist_t hl = slurm_hostlist_create(nodes.c_str());
  if (hl == nullptr) return {nodes};
  while (char* h = slurm_hostlist_shift(hl)) {
    out.emplace_back(h);
    free(h);  // allocated by libslurm with malloc
  }
  slurm_hostlist_destroy(hl);
  return out;
}

std::optional<uint32_t> ParseJobId(const std::string& id) {
  uint32_t v = 0;
  auto [end, ec] = std::from_chars(id.data(), id.data() + id.size(), v);
  if (ec != std::errc() || end != id.data() + id.size() || v == 0) return std::nullopt;
  return v;
}

// The sbatch options belay passes through libslurm, by the rule `belay validate` applies.
struct PassedOptions {
  std::string qos, reservation, constraint;
  bool exclusive = false;
};

absl::StatusOr<PassedOptions> ParsePassedOptions(const std::vector<std::string>& options) {
  PassedOptions out;
  for (const std::string& o : options) {
    absl::StatusOr<SbatchOption> opt = ParseSbatchOption(o);
    if (!opt.ok()) return opt.status();
    switch (opt->kind) {
      case SbatchOption::Kind::kQos:
        out.qos = opt->value;
        break;
      case SbatchOption::Kind::kReservation:
        out.reservation = opt->value;
        break;
      case SbatchOption::Kind::kConstraint:
        out.constraint = opt->value;
        break;
      case SbatchOption::Kind::kExclusive:
        out.exclusive = true;
        break;
    }
  }
  return out;
}

// The job's environment as KEY=VALUE strings: belayd's, minus rank and scheduler variables of
// its own, plus the job's.
std::vector<std::string> JobEnvironment(const SlurmSchedulerOptions& options, const JobSpec& job,
                                        const std::optional<RunAs>& as) {
  std::map<std::string, std::string> env = InheritedEnvironment();
  if (as) MakeEnvironmentOf(*as, env);
  for (const auto& [k, v] : options.mpi_env) env[k] = v;
  for (const auto& [k, v] : job.env) env[k] = v;
  std::vector<std::string> kvs;
  for (const auto& [k, v] : env) kvs.push_back(k + "=" + v);
  return kvs;
}

}  // namespace

SlurmScheduler::SlurmScheduler(SlurmSchedulerOptions options) : options_(std::move(options)) {
  // Reads slurm.conf (where slurmctld is, how to authenticate); no RPC.
  slurm_init(options_.conf.empty() ? nullptr : options_.conf.c_str());
}

SlurmScheduler::~SlurmScheduler() { slurm_fini(); }

absl::Status SlurmScheduler::Admit() {
  const Clock::time_point now = Clock::now();
  if (now < backoff_until_) {
    ++refused_;
    return absl::UnavailableError(
        Cat("slurmctld failed recently; next try in ",
            std::chrono::duration_cast<std::chrono::seconds>(backoff_until_ - now).count(), " s"));
  }
  while (!recent_.empty() && now - recent_.front() >= std::chrono::minutes(1)) recent_.pop_front();
  if (static_cast<int>(recent_.size()) >= options_.rpc_budget_per_minute) {
    ++refused_;
    return absl::UnavailableError(
        Cat("the budget of ", options_.rpc_budget_per_minute, " Slurm RPCs per minute is used up"));
  }
  recent_.push_back(now);
  ++rpcs_;
  return absl::OkStatus();
}

void SlurmScheduler::Succeeded() { backoff_ = std::chrono::milliseconds(0); }

absl::Status SlurmScheduler::Failed(std::string what) {
  backoff_ =
      std::min(options_.max_backoff, std::max(std::chrono::milliseconds(1000), backoff_ * 2));
  backoff_until_ = Clock::now() + backoff_;
  spdlog::warn("{}; backing off {} ms", what, backoff_.count());
  return absl::UnavailableError(std::move(what));
}

absl::Status SlurmScheduler::Load(bool fresh) {
  if (!fresh && !stale_ && Clock::now() - loaded_at_ < options_.min_poll_interval)
    return absl::OkStatus();
  if (absl::Status s = Admit(); !s.ok()) return s;
  job_info_msg_t* msg = nullptr;
  if (slurm_load_jobs(0, &msg, SHOW_ALL) != SLURM_SUCCESS) {
    const int err = slurm_get_errno();
    const std::string what = Cat("loading Slurm jobs: ", SlurmError());
    if (Unreachable(err)) return Failed(what);
    return absl::InternalError(what);
  }
  Succeeded();
  std::unique_ptr<job_info_msg_t, void (*)(job_info_msg_t*)> owned(msg, slurm_free_job_info_msg);
  jobs_.clear();
  for (uint32_t i = 0; i < msg->record_count; ++i) {
    const slurm_job_info_t& j = msg->job_array[i];
    Seen s;
    s.job_state = j.job_state;
    s.comment = j.comment != nullptr ? j.comment : "";
    // A job that has not started yet may have only its scheduled nodes.
    s.nodes = j.nodes != nullptr ? j.nodes : "";
    s.work_dir = j.work_dir != nullptr ? j.work_dir : "";
    s.num_tasks = j.num_tasks;
    s.user_id = j.user_id;
    s.reason = j.state_desc != nullptr ? j.state_desc : "";
    // (22.05 has no public reason-to-text helper: the code it is, then.)
    if (s.reason.empty() && j.state_reason != WAIT_NO_REASON)
      s.reason = Cat("reason code ", j.state_reason);
    jobs_[j.job_id] = std::move(s);
  }
  loaded_at_ = Clock::now();
  stale_ = false;
  return absl::OkStatus();
}

absl::StatusOr<std::string> SlurmScheduler::Submit(const JobSpec& job) {
  if (job.world_size < 1 || job.ranks_per_node < 1 || job.world_size % job.ranks_per_node != 0) {
    return absl::InvalidArgumentError(
        Cat(job.world_size, " ranks do not fill nodes of ", job.ranks_per_node));
  }
  if (job.command.empty()) return absl::InvalidArgumentError("empty command");
  const fs::path log_dir = fs::absolute(job.log_dir);
  absl::StatusOr<std::optional<RunAs>> as = ResolveRunAs(job);
  if (!as.ok()) return as.status();
  const uid_t uid = *as ? static_cast<uid_t>((*as)->uid) : ::getuid();
  const gid_t gid = *as ? static_cast<gid_t>((*as)->gid) : ::getgid();
  // The batch script writes its output there, the ranks their logs.
  if (absl::Status s = PrepareLogDirectory(job, *as); !s.ok()) return s;

  // Idempotent per (campaign, attempt): a job already submitted for it, in whatever state.
  std::string token;
  for (const auto& [k, v] : job.env) {
    if (k == "BELAY_TOKEN") token = v;
  }
  std::string comment = SlurmJobComment(job.campaign_id, job.attempt, token);
  if (absl::Status s = Load(/*fresh=*/true); !s.ok()) return s;
  for (auto it = jobs_.rbegin(); it != jobs_.rend(); ++it) {
    if (it->second.comment == comment && it->second.user_id == uid)
      return std::to_string(it->first);
  }
  std::error_code ec;
  for (int r = 0; r < job.world_size; ++r) fs::remove(RankFile(log_dir, r, "exit"), ec);

  JobSpec in_dir = job;
  in_dir.log_dir = log_dir;
  std::string script = SlurmBatchScript(in_dir, options_.mpirun);
  std::string name = Cat("belay-", job.campaign_id, "-", job.attempt);
  std::string std_out = (log_dir / "slurm-%j.out").string();
  std::string work_dir = log_dir.string();
  std::string dependency;
  if (!job.after_job.empty()) {
    const std::optional<uint32_t> after = ParseJobId(job.after_job);
    if (!after) return absl::InvalidArgumentError(Cat("not a Slurm job id: ", job.after_job));
    dependency = Cat("afterany:", *after);
  }
  std::string exclude;
  for (const std::string& n : job.exclude_nodes) exclude += (exclude.empty() ? "" : ",") + n;
  std::string partition = job.partition.empty() ? options_.partition : job.partition;
  std::string account = job.account.empty() ? options_.account : job.account;
  absl::StatusOr<PassedOptions> passed = ParsePassedOptions(job.sbatch_options);
  if (!passed.ok()) return passed.status();
  std::vector<std::string> kvs = JobEnvironment(options_, job, *as);
  std::vector<char*> envp;
  for (std::string& kv : kvs) envp.push_back(kv.data());
  envp.push_back(nullptr);

  job_desc_msg_t d;
  slurm_init_job_desc_msg(&d);
  d.name = name.data();
  d.comment = comment.data();
  d.script = script.data();
  d.min_nodes = d.max_nodes = static_cast<uint32_t>(job.world_size / job.ranks_per_node);
  d.num_tasks = static_cast<uint32_t>(job.world_size);
  d.ntasks_per_node = static_cast<uint16_t>(job.ranks_per_node);
  if (job.time_limit) {
    d.time_limit = static_cast<uint32_t>(std::max<int64_t>(1, (job.time_limit->count() + 59) / 60));
  }
  if (!exclude.empty()) d.exc_nodes = exclude.data();
  if (!dependency.empty()) d.dependency = dependency.data();
  // Slurm 22.05 spells --gpus-per-node=G as the TRES "gres:gpu:G".
  std::string gpus = job.gpus_per_node > 0 ? Cat("gres:gpu:", job.gpus_per_node) : "";
  if (!gpus.empty()) d.tres_per_node = gpus.data();
  if (!partition.empty()) d.partition = partition.data();
  if (!account.empty()) d.account = account.data();
  if (!passed->qos.empty()) d.qos = passed->qos.data();
  if (!passed->reservation.empty()) d.reservation = passed->reservation.data();
  if (!passed->constraint.empty()) d.features = passed->constraint.data();
  if (passed->exclusive) d.shared = JOB_SHARED_NONE;
  d.std_out = std_out.data();
  d.work_dir = work_dir.data();
  d.environment = envp.data();
  d.env_size = static_cast<uint32_t>(kvs.size());
  d.requeue = 0;  // belay decides restarts
  d.warn_signal = SIGUSR1;
  d.warn_time = static_cast<uint16_t>(std::clamp<int64_t>(
      job.pre_limit_signal.value_or(options_.pre_limit_signal).count(), 0, 65535));
  d.warn_flags = KILL_JOB_BATCH;  // to the batch shell, which passes it on to mpirun
  d.user_id = uid;  // (slurmctld takes another user's uid from root or SlurmUser only)
  d.group_id = gid;

  if (absl::Status s = Admit(); !s.ok()) return s;
  submit_response_msg_t* resp = nullptr;
  const int rc = slurm_submit_batch_job(&d, &resp);
  stale_ = true;
  if (rc != SLURM_SUCCESS || resp == nullptr) {
    const int err = slurm_get_errno();
    const std::string what = Cat("sbatch of ", name, ": ", SlurmError());
    if (Unreachable(err)) return Failed(what);
    return absl::FailedPreconditionError(what);
  }
  Succeeded();
  const uint32_t id = resp->job_id;
  slurm_free_submit_response_response_msg(resp);
  spdlog::info("submitted {} as Slurm job {}", name, id);
  return std::to_string(id);
}

absl::StatusOr<std::vector<JobStatus>> SlurmScheduler::Poll(const std::vector<std::string>& ids) {
  if (ids.empty()) return std::vector<JobStatus>{};
  if (absl::Status s = Load(/*fresh=*/false); !s.ok()) return s;
  std::vector<JobStatus> out;
  bool node_failure = false;
  for (const std::string& id : ids) {
    JobStatus st;
    st.job_id = id;
    const std::optional<uint32_t> num = ParseJobId(id);
    auto it = num ? jobs_.find(*num) : jobs_.end();
    if (it == jobs_.end()) {
      st.state = JobState::kUnknown;
      st.message = Cat("slurmctld does not know job ", id,
                       " (it ended longer ago than MinJobAge, or never existed)");
      out.push_back(std::move(st));
      continue;
    }
    const Seen& seen = it->second;
    const SlurmStateMeaning m = MeaningOfSlurmState(seen.job_state);
    st.state = m.state;
    st.nodes = ExpandHostlist(seen.nodes);
    st.message = Cat("Slurm job ", id, " ", m.name, seen.reason.empty() ? "" : ": ", seen.reason);
    if (m.state == JobState::kEnded) {
      st.reason = m.reason;
      node_failure = node_failure || m.reason == pb::END_REASON_NODE_FAILURE;
      for (uint32_t r = 0; r < seen.num_tasks; ++r) {
        st.ranks.push_back(ReadRankEnd(seen.work_dir, static_cast<int>(r), ""));
      }
    }
    out.push_back(std::move(st));
  }
  // For a node failure, name the nodes that failed (the job's nodes that are down now).
  if (node_failure) {
    absl::StatusOr<std::vector<NodeState>> nodes = NodeStates();
    if (nodes.ok()) {
      std::set<std::string> down;
      for (const NodeState& n : *nodes) {
        if (n.down) down.insert(n.name);
      }
      for (JobStatus& st : out) {
        if (st.reason != pb::END_REASON_NODE_FAILURE) continue;
        std::vector<std::string> failed;
        for (const std::string& n : st.nodes) {
          if (down.count(n) > 0) failed.push_back(n);
        }
        if (!failed.empty()) st.nodes = failed;
      }
    } else {
      spdlog::warn("{}", std::string(nodes.status().message()));
    }
  }
  return out;
}

absl::StatusOr<std::vector<NodeState>> SlurmScheduler::NodeStates() {
  if (absl::Status s = Admit(); !s.ok()) return s;
  node_info_msg_t* nodes = nullptr;
  if (slurm_load_node(0, &nodes, SHOW_ALL) != SLURM_SUCCESS) {
    const int err = slurm_get_errno();
    const std::string what = Cat("loading Slurm nodes: ", SlurmError());
    if (Unreachable(err)) return Failed(what);
    return absl::InternalError(what);
  }
  Succeeded();
  std::unique_ptr<node_info_msg_t, void (*)(node_info_msg_t*)> owned(nodes,
                                                                     slurm_free_node_info_msg);
  // slurm_load_node leaves each node's partitions empty; they come from the partition table.
  std::string default_partition;
  if (partition_info_msg_t* parts = Partitions()) {
    slurm_populate_node_partitions(nodes, parts);
    for (uint32_t i = 0; i < parts->record_count; ++i) {
      const partition_info_t& p = parts->partition_array[i];
      if (p.name != nullptr && (p.flags & PART_FLAG_DEFAULT) != 0) default_partition = p.name;
    }
  }
  std::vector<NodeState> out;
  for (uint32_t i = 0; i < nodes->record_count; ++i) {
    const node_info_t& n = nodes->node_array[i];
    if (n.name == nullptr) continue;
    NodeState st;
    st.name = n.name;
    st.state = SlurmNodeStateName(n.node_state);
    st.reason = n.reason != nullptr ? n.reason : "";
    st.down = (n.node_state & NODE_STATE_BASE) == NODE_STATE_DOWN ||
              (n.node_state & (NODE_STATE_NO_RESPOND | NODE_STATE_FAIL)) != 0;
    st.drain = (n.node_state & NODE_STATE_DRAIN) != 0;
    // A comma-separated list.
    for (std::string_view rest = n.partitions != nullptr ? n.partitions : ""; !rest.empty();) {
      const size_t comma = rest.find(',');
      const std::string_view p = rest.substr(0, comma);
      rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
      if (p.empty()) continue;
      st.partitions.emplace_back(p);
      st.in_default_partition = st.in_default_partition || p == default_partition;
    }
    out.push_back(std::move(st));
  }
  return out;
}

partition_info_msg* SlurmScheduler::Partitions() {
  const Clock::time_point now = Clock::now();
  if (partitions_at_ && now - *partitions_at_ < std::chrono::minutes(10)) return partitions_.get();
  if (!Admit().ok()) return partitions_.get();
  partition_info_msg_t* parts = nullptr;
  if (slurm_load_partitions(0, &parts, SHOW_ALL) != SLURM_SUCCESS) {
    const int err = slurm_get_errno();
    const std::string what = Cat("loading Slurm partitions: ", SlurmError());
    if (Unreachable(err)) {
      (void)Failed(what);
    } else {
      spdlog::warn("{}", what);
    }
    return partitions_.get();
  }
  Succeeded();
  partitions_ = {parts, slurm_free_partition_info_msg};
  partitions_at_ = now;
  return parts;
}

absl::Status SlurmScheduler::Signal(const std::string& job_id, int sig) {
  const std::optional<uint32_t> num = ParseJobId(job_id);
  if (!num) return absl::InvalidArgumentError(Cat("not a Slurm job id: ", job_id));
  if (absl::Status s = Admit(); !s.ok()) return s;
  // SIGKILL cancels the whole job; other signals go to the batch shell, which passes them on.
  const int rc =
      slurm_kill_job(*num, static_cast<uint16_t>(sig), sig == SIGKILL ? 0 : KILL_JOB_BATCH);
  stale_ = true;
  if (rc == SLURM_SUCCESS) {
    Succeeded();
    return absl::OkStatus();
  }
  const int err = slurm_get_errno();
  if (err == ESLURM_ALREADY_DONE || err == ESLURM_INVALID_JOB_ID) return absl::OkStatus();  // ended
  if (err == ESLURM_JOB_PENDING || err == ESLURM_TRANSITION_STATE_NO_UPDATE) {
    // Not started: no rank to ask anything; the job goes (belay resubmits what it needs).
    if (absl::Status s = Admit(); !s.ok()) return s;
    if (slurm_kill_job(*num, SIGKILL, 0) == SLURM_SUCCESS) return absl::OkStatus();
  }
  const std::string what = Cat("signal ", sig, " to Slurm job ", job_id, ": ", SlurmError());
  if (Unreachable(err)) return Failed(what);
  return absl::InternalError(what);
}

}  // namespace belay::sched
