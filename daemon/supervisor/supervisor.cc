// Supervisor: load, reconcile, persist, act.
#include "daemon/supervisor/supervisor.h"

#include <signal.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "belay/v1/enum_names.h"
#include "common/ckpt/layout.h"
#include "common/strings.h"
#include "daemon/store/records.h"
#include "daemon/supervisor/campaign_files.h"
#include "daemon/supervisor/goodput.h"
#include "daemon/supervisor/policy.h"
#include "daemon/supervisor/rank_records.h"
#include "daemon/supervisor/rank_times.h"
#include "spdlog/spdlog.h"

namespace belay::supervisor {
namespace {

namespace fs = std::filesystem;
using store::Durability;
using store::WriteBatch;

constexpr std::string_view kCampaignSeqKey = "next_campaign_seq";

}  // namespace

Supervisor::Supervisor(store::Store& store, sched::Scheduler& scheduler, const Clock& clock,
                       SupervisorOptions options)
    : store_(store),
      scheduler_(scheduler),
      clock_(clock),
      options_(std::move(options)),
      events_(store_, clock_),
      checkpoint_files_(std::make_unique<checkpoints::DiskCheckpointFiles>(options_.run_as_owner)),
      checkpoints_(store_, events_, clock_, *checkpoint_files_, options_.verify_in_background),
      monitor_(
          store_, clock_,
          {options_.default_hang_timeout, options_.auto_hang_floor, options_.rank_sums_interval,
           options_.attempt_write_interval, options_.evidence_steps}),
      nodes_(store_, scheduler_, events_, clock_, options_.node_health,
             options_.node_state_interval),
      attempt_tokens_(options_.token_key.empty() ? AttemptTokens::RandomKey() : options_.token_key),
      watching_since_(clock_.Now()),
      jitter_(options_.jitter_seed) {}

absl::Status Supervisor::SetCampaignState(WriteBatch& batch, pb::Campaign& c, pb::CampaignState to,
                                          const std::string& why) {
  if (c.state() == to) return absl::OkStatus();
  absl::StatusOr<PlannedEvent> e = ChangeCampaignState(c, to, why, clock_.Now());
  if (!e.ok()) return e.status();
  return events_.Add(batch, c, e->kind, e->severity, std::move(e->message));
}

absl::StatusOr<pb::Campaign> Supervisor::Submit(const CampaignSpec& spec, std::string spec_toml,
                                                std::string spec_file, uint32_t owner_uid,
                                                std::string owner_name) {
  MutexLock lock(&mu_);
  absl::StatusOr<std::optional<std::string>> seq_text =
      store_.Get(store::Table::kMeta, kCampaignSeqKey);
  if (!seq_text.ok()) return seq_text.status();
  int64_t seq = seq_text->has_value() ? std::stoll(**seq_text) : 1;
  // A checkpoint directory that already has the next id's name belongs to no campaign of this
  // store (a belayd whose state was reset, another daemon): its checkpoints are not this
  // campaign's to clean up or overwrite, so the number is skipped.
  for (int skipped = 0; skipped < 1000; ++skipped) {
    const std::string next = Cat(spec.campaign.name, "-", seq);
    if (!CheckpointDirTaken(spec.checkpoint.dir, next)) break;
    spdlog::warn(
        "{} exists and is not from this belayd's campaigns: the new campaign is not numbered {}",
        ckpt::CampaignDir(spec.checkpoint.dir, next).string(), seq);
    ++seq;
  }
  pb::Campaign c;
  c.set_id(Cat(spec.campaign.name, "-", seq));
  if (absl::Status s = store::ValidateId("campaign id", c.id()); !s.ok()) return s;
  c.set_owner_uid(owner_uid);
  c.set_owner_name(std::move(owner_name));
  c.set_name(spec.campaign.name);
  c.set_description(spec.campaign.description);
  c.set_state(pb::CAMPAIGN_STATE_SUBMITTED);
  c.set_spec_toml(std::move(spec_toml));
  c.set_spec_file(std::move(spec_file));
  c.set_scheduler(spec.resources.scheduler == SchedulerKind::kSlurm ? pb::SCHEDULER_KIND_SLURM
                                                                    : pb::SCHEDULER_KIND_LOCAL);
  SetTime(c.mutable_submit_time(), clock_.Now());
  SetTime(c.mutable_update_time(), clock_.Now());
  c.set_total_steps(spec.total_steps());
  c.set_tokens_per_step(spec.train.global_batch * spec.model.seq_len);
  c.set_max_restarts(static_cast<int32_t>(spec.restart.max_restarts));
  c.set_max_rollbacks(static_cast<int32_t>(spec.restart.max_rollbacks));

  // The effective spec, every path absolute (each attempt's ranks get a copy in their log
  // directory); written before the campaign exists in the store, so a stored campaign always
  // has it. Only belayd reads this one; the campaign's directory lets the owner's ranks
  // through to their attempt directories and lists nothing.
  // Checkpoints of the campaign live under <checkpoint dir>/<campaign id>: the workers' copy
  // is named by the id, so that two campaigns of one name never share a directory.
  CampaignSpec effective = spec;
  effective.campaign.name = c.id();
  if (absl::Status s = WriteEffectiveSpec(options_.state_dir, c.id(), effective); !s.ok()) return s;

  WriteBatch b;
  b.Put(store::Table::kMeta, std::string(kCampaignSeqKey), std::to_string(seq + 1));
  store::Put(b, c);
  if (absl::Status s = events_.Add(
          b, c, pb::EVENT_KIND_CAMPAIGN_SUBMITTED, pb::SEVERITY_INFO,
          Cat("submitted by ", c.owner_name(), " (uid ", owner_uid, "): ", c.total_steps(),
              " steps on ", spec.resources.world_size(), " ranks"));
      !s.ok()) {
    return s;
  }
  if (absl::Status s = store_.Write(b, Durability::kSynced); !s.ok()) return s;
  return c;
}

absl::Status Supervisor::Cancel(const std::string& id) {
  MutexLock lock(&mu_);
  absl::StatusOr<std::optional<pb::Campaign>> c = store::GetCampaign(store_, id);
  if (!c.ok()) return c.status();
  if (!c->has_value()) return absl::NotFoundError(Cat("no campaign ", id));
  pb::Campaign& campaign = **c;
  if (IsTerminal(campaign.state())) {
    return absl::FailedPreconditionError(
        Cat("campaign ", id, " already ended (", Name(campaign.state()), ")"));
  }
  if (campaign.cancel_requested()) return absl::OkStatus();
  campaign.set_cancel_requested(true);
  WriteBatch b;
  store::Put(b, campaign);
  if (absl::Status s = events_.Add(b, campaign, pb::EVENT_KIND_CAMPAIGN_CANCEL_REQUESTED,
                                   pb::SEVERITY_INFO, "cancel requested");
      !s.ok()) {
    return s;
  }
  return store_.Write(b, Durability::kSynced);
}

absl::StatusOr<Supervisor::Loaded> Supervisor::Load(const std::string& id) {
  absl::StatusOr<std::optional<pb::Campaign>> c = store::GetCampaign(store_, id);
  if (!c.ok()) return c.status();
  if (!c->has_value()) return absl::NotFoundError(Cat("no campaign ", id));
  Loaded l;
  l.campaign = std::move(**c);
  // The effective spec never changes after Submit: parsed once per campaign per belayd.
  auto cached = specs_.find(id);
  if (cached == specs_.end()) {
    absl::StatusOr<CampaignSpec> spec = ReadEffectiveSpec(options_.state_dir, id);
    if (!spec.ok()) return spec.status();
    cached = specs_.emplace(id, std::move(*spec)).first;
  }
  l.spec = cached->second;
  if (l.campaign.current_attempt() > 0) {
    absl::StatusOr<std::optional<pb::Attempt>> a =
        store::GetAttempt(store_, id, l.campaign.current_attempt());
    if (!a.ok()) return a.status();
    if (a->has_value()) l.attempt = std::move(**a);
  }
  // Step reports write the attempt's progress at a bounded rate; the latest is in memory.
  if (l.attempt) monitor_.ShowProgress(id, *l.attempt);
  return l;
}

absl::Status Supervisor::Tick() {
  MutexLock lock(&mu_);
  if (absl::Status s = store_.write_error(); !s.ok()) return store::ReadOnlyError(s);
  absl::StatusOr<std::vector<pb::Campaign>> all = store::ListCampaigns(store_);
  if (!all.ok()) return all.status();
  std::vector<Loaded> active;
  // Jobs by backend: one backend that cannot be reached (slurmctld down) holds up only its own
  // campaigns.
  std::map<pb::SchedulerKind, std::vector<std::string>> job_ids;
  for (const pb::Campaign& c : *all) {
    if (IsTerminal(c.state())) continue;
    absl::StatusOr<Loaded> l = Load(c.id());
    if (!l.ok()) {
      spdlog::error("campaign {}: cannot load: {}", c.id(), std::string(l.status().message()));
      continue;
    }
    if (l->attempt && !l->attempt->scheduler_job_id().empty() &&
        l->attempt->state() != pb::ATTEMPT_STATE_ENDED) {
      job_ids[l->attempt->scheduler()].push_back(l->attempt->scheduler_job_id());
      if (l->attempt->presubmitted() && l->attempt->state() == pb::ATTEMPT_STATE_QUEUED) {
        successor_tokens_.insert(
            DigestOf(c.id(), l->attempt->number(), l->attempt->worker_token_nonce()));
      } else {  // (taken over below, this round)
        tokens_[DigestOf(c.id(), l->attempt->number(), l->attempt->worker_token_nonce())] =
            RefOf(*l);
      }
    }
    if (l->attempt && !l->attempt->successor_job_id().empty() &&
        l->attempt->state() != pb::ATTEMPT_STATE_ENDED) {
      successor_tokens_.insert(
          DigestOf(c.id(), l->attempt->number() + 1, l->attempt->successor_token_nonce()));
    }
    active.push_back(std::move(*l));
  }
  std::map<std::string, sched::JobStatus> polled;
  std::set<pb::SchedulerKind> unreachable;
  for (const auto& [kind, ids] : job_ids) {
    absl::StatusOr<std::vector<sched::JobStatus>> st = scheduler_.Poll(ids);
    if (!st.ok()) {
      spdlog::warn("{} scheduler poll failed, its campaigns wait for the next round: {}",
                   pb::ShortName(kind), std::string(st.status().message()));
      unreachable.insert(kind);
      continue;
    }
    for (sched::JobStatus& j : *st) polled[j.job_id] = std::move(j);
  }
  // Node states first: an attempt submitted in this round plans its nodes from them.
  const bool slurm_active = std::any_of(active.begin(), active.end(), [](const Loaded& l) {
    return l.campaign.scheduler() == pb::SCHEDULER_KIND_SLURM;
  });
  if (slurm_active && unreachable.count(pb::SCHEDULER_KIND_SLURM) == 0) {
    if (absl::Status s = nodes_.RefreshStatesIfDue(); !s.ok()) {
      if (!store_.write_error().ok()) return s;
      spdlog::warn("node states not refreshed: {}", std::string(s.message()));
    }
  }
  for (Loaded& l : active) {
    if (l.attempt && !l.attempt->scheduler_job_id().empty() &&
        l.attempt->state() != pb::ATTEMPT_STATE_ENDED &&
        unreachable.count(l.attempt->scheduler()) > 0) {
      continue;  // its job's state is unknown this round
    }
    absl::Status s = Reconcile(l, polled);
    if (!s.ok()) {
      if (!store_.write_error().ok()) return s;
      spdlog::error("campaign {}: {}", l.campaign.id(), std::string(s.message()));
    }
  }
  return absl::OkStatus();
}

absl::Status Supervisor::QueueFirstAttempt(Loaded& l) {
  pb::Campaign& c = l.campaign;
  WriteBatch b;
  if (c.cancel_requested()) {
    if (absl::Status s = SetCampaignState(b, c, pb::CAMPAIGN_STATE_CANCELLED, "before any attempt");
        !s.ok())
      return s;
    c.set_end_reason(pb::END_REASON_CANCELLED_BY_USER);
    store::Put(b, c);
    return store_.Write(b, Durability::kSynced);
  }
  pb::Attempt a;
  a.set_campaign_id(c.id());
  a.set_number(1);
  a.set_state(pb::ATTEMPT_STATE_QUEUED);
  a.set_world_size(static_cast<int32_t>(l.spec.resources.world_size()));
  a.set_ranks_per_node(static_cast<int32_t>(l.spec.resources.ranks_per_node));
  a.set_scheduler(c.scheduler());
  SetTime(a.mutable_queue_time(), clock_.Now());
  c.set_current_attempt(1);
  store::Put(b, a);
  store::Put(b, c);
  if (absl::Status s = events_.Add(b, c, pb::EVENT_KIND_ATTEMPT_QUEUED, pb::SEVERITY_INFO,
                                   "attempt 1 queued", 1);
      !s.ok())
    return s;
  if (absl::Status s = store_.Write(b, Durability::kSynced); !s.ok()) return s;
  l.attempt = a;
  return absl::OkStatus();
}

absl::Status Supervisor::Reconcile(Loaded& l,
                                   const std::map<std::string, sched::JobStatus>& polled) {
  pb::Campaign& c = l.campaign;
  const TimePoint now = clock_.Now();
  if (!l.attempt) {
    absl::Status s = QueueFirstAttempt(l);
    if (!s.ok() || !l.attempt) return s;  // (cancelled before any attempt)
  }
  pb::Attempt& a = *l.attempt;
  if (a.state() == pb::ATTEMPT_STATE_QUEUED && a.presubmitted() && !a.scheduler_job_id().empty()) {
    if (absl::Status s = TakeOverPresubmitted(l); !s.ok()) return s;
  }
  if (a.state() == pb::ATTEMPT_STATE_QUEUED && a.scheduler_job_id().empty()) {
    if (c.cancel_requested()) {
      sched::JobStatus none;
      none.state = sched::JobState::kEnded;
      none.message = "cancelled before it started";
      return EndAttempt(l, none);
    }
    if (now < FromTimestamp(a.queue_time())) return absl::OkStatus();  // backoff
    return StartAttempt(l);
  }
  if (a.state() == pb::ATTEMPT_STATE_ENDED) return absl::OkStatus();
  auto it = polled.find(a.scheduler_job_id());
  if (it == polled.end()) return absl::OkStatus();
  const sched::JobStatus& job = it->second;
  if (job.state == sched::JobState::kEnded) return EndAttempt(l, job);
  if (job.state == sched::JobState::kUnknown) {
    sched::JobStatus lost = job;
    lost.state = sched::JobState::kEnded;
    lost.reason = pb::END_REASON_DAEMON_LOST;
    lost.message = Cat("the scheduler no longer knows job ", job.job_id, ": ", job.message);
    return EndAttempt(l, lost);
  }
  if (job.state == sched::JobState::kRunning && a.state() == pb::ATTEMPT_STATE_STARTING) {
    if (absl::Status s = MarkRunning(l, job); !s.ok()) return s;
  }
  if (WantsPresubmit(c, a, l.spec)) {
    if (absl::Status s = Presubmit(l); !s.ok()) return s;
  }
  return WatchRunning(l);
}

absl::Status Supervisor::MarkRunning(Loaded& l, const sched::JobStatus& job) {
  pb::Campaign& c = l.campaign;
  pb::Attempt& a = *l.attempt;
  WriteBatch b;
  a.set_state(pb::ATTEMPT_STATE_RUNNING);
  SetTime(a.mutable_running_time(), clock_.Now());
  for (const std::string& n : job.nodes) a.add_nodes(n);
  if (absl::Status s = SetCampaignState(b, c, pb::CAMPAIGN_STATE_RUNNING,
                                        Cat("attempt ", a.number(), " running"));
      !s.ok())
    return s;
  store::Put(b, a);
  store::Put(b, c);
  if (absl::Status s = events_.Add(
          b, c, pb::EVENT_KIND_ATTEMPT_RUNNING, pb::SEVERITY_INFO,
          Cat("attempt ", a.number(), " running as job ", a.scheduler_job_id()), a.number());
      !s.ok()) {
    return s;
  }
  return store_.Write(b, Durability::kSynced);
}

absl::Status Supervisor::WatchRunning(Loaded& l) {
  const pb::Campaign& c = l.campaign;
  pb::Attempt& a = *l.attempt;
  const TimePoint now = clock_.Now();
  if (c.cancel_requested()) {
    auto sent = cancel_signalled_.find(c.id());
    if (sent == cancel_signalled_.end()) {
      cancel_signalled_[c.id()] = now;
      return scheduler_.Signal(a.scheduler_job_id(), SIGUSR1);
    }
    if (now - sent->second > options_.cancel_grace)
      return scheduler_.Signal(a.scheduler_job_id(), SIGKILL);
    return absl::OkStatus();
  }
  // Hang: no step progress for hang_timeout while the job runs. Not judged in the first
  // restart_grace of this belayd: ranks that kept retrying while it was down find it again
  // only at their next try.
  if (a.state() == pb::ATTEMPT_STATE_RUNNING && a.end_reason() == pb::END_REASON_UNSPECIFIED &&
      now - watching_since_ >= options_.restart_grace) {
    if (const std::optional<std::chrono::seconds> timeout =
            monitor_.Overdue(c.id(), a, l.spec.restart.hang_timeout, watching_since_)) {
      WriteBatch b;
      a.set_end_reason(pb::END_REASON_HANG);  // pending: the attempt ends once the job is gone
      a.set_end_message(Cat("no step progress for ", timeout->count(), " s (last step ",
                            a.last_step(),
                            "); last heartbeats: ", monitor_.DescribeRanks(c.id(), a.number())));
      store::Put(b, a);
      if (absl::Status s = events_.Add(
              b, c, pb::EVENT_KIND_ATTEMPT_ENDED, pb::SEVERITY_WARNING,
              Cat("attempt ", a.number(), " hangs: ", a.end_message(), "; killing it"), a.number());
          !s.ok()) {
        return s;
      }
      if (absl::Status s = store_.Write(b, Durability::kSynced); !s.ok()) return s;
      return scheduler_.Signal(a.scheduler_job_id(), SIGKILL);
    }
  }
  if (a.end_reason() != pb::END_REASON_UNSPECIFIED) {
    // A pending end (hang, nan): make sure the job goes.
    return scheduler_.Signal(a.scheduler_job_id(), SIGKILL);
  }
  return absl::OkStatus();
}

Supervisor::AttemptRef Supervisor::RefOf(const Loaded& l) const {
  const pb::Attempt& a = *l.attempt;
  AttemptRef r{l.campaign.id(), a.number(), a.world_size(), ""};
  if (a.has_start_checkpoint_step()) {
    r.resume_dir =
        ckpt::StepDir(l.spec.checkpoint.dir, l.campaign.id(), a.start_checkpoint_step()).string();
  }
  return r;
}

sched::JobSpec Supervisor::JobFor(const Loaded& l, int32_t number, const std::string& nonce,
                                  bool resume_from_coordinator) {
  const pb::Campaign& c = l.campaign;
  JobRequest r;
  r.number = number;
  r.token = attempt_tokens_.Token(c.id(), number, nonce);
  r.log_dir = AttemptLogDir(options_.state_dir, c.id(), number);
  r.resume_from_coordinator = resume_from_coordinator;
  if (!l.spec.checkpoint.every_steps) {
    // The save interval follows the failures seen so far (a store read error: the prior).
    absl::StatusOr<std::vector<pb::Attempt>> attempts = store::ListAttempts(store_, c.id());
    r.mtbf = EstimateMtbf(attempts.ok() ? *attempts : std::vector<pb::Attempt>{},
                          options_.checkpoint_mtbf_prior);
  }
  const WorkerSettings w{options_.worker_program, options_.coordinator_address,
                         options_.coordinator_ca_pem, options_.coordinator_tls_name,
                         options_.run_as_owner};
  return BuildJobSpec(w, c, *l.attempt, l.spec, r);
}

absl::Status Supervisor::Presubmit(Loaded& l) {
  pb::Attempt& a = *l.attempt;
  if (absl::Status s = nodes_.PrepareSuccessor(a); !s.ok()) return s;
  absl::StatusOr<std::optional<std::string>> id = nodes_.Presubmit(
      l.campaign, a,
      JobFor(l, a.number() + 1, a.successor_token_nonce(), /*resume_from_coordinator=*/true));
  if (!id.ok()) return id.status();
  if (id->has_value()) {
    successor_tokens_.insert(DigestOf(l.campaign.id(), a.number() + 1, a.successor_token_nonce()));
  }
  return absl::OkStatus();
}

absl::Status Supervisor::TakeOverPresubmitted(Loaded& l) {
  pb::Campaign& c = l.campaign;
  pb::Attempt& a = *l.attempt;
  WriteBatch b;
  absl::StatusOr<checkpoints::Resume> resume = checkpoints_.PrepareResume(c, a, b);
  if (!resume.ok()) return resume.status();
  if (*resume == checkpoints::Resume::kPending)
    return b.empty() ? absl::OkStatus() : store_.Write(b, Durability::kSynced);  // ranks wait
  a.set_state(pb::ATTEMPT_STATE_STARTING);
  SetTime(a.mutable_start_time(), clock_.Now());
  store::Put(b, a);
  store::Put(b, c);
  if (absl::Status s = events_.Add(
          b, c, pb::EVENT_KIND_ATTEMPT_STARTING, pb::SEVERITY_INFO,
          Cat("attempt ", a.number(), " takes over job ", a.scheduler_job_id(),
              ", presubmitted during attempt ", a.number() - 1, " (", a.world_size(), " ranks",
              a.has_start_checkpoint_step()
                  ? Cat(", from checkpoint step ", a.start_checkpoint_step())
                  : "",
              ")"),
          a.number());
      !s.ok()) {
    return s;
  }
  if (absl::Status s = store_.Write(b, Durability::kSynced); !s.ok()) return s;
  // The job's ranks, if already started, wait for their registration: nothing is written yet.
  checkpoints_.RemoveUncommittedSteps(c, l.spec.checkpoint.dir);
  const std::string digest = DigestOf(c.id(), a.number(), a.worker_token_nonce());
  successor_tokens_.erase(digest);
  tokens_[digest] = RefOf(l);
  return absl::OkStatus();
}

absl::Status Supervisor::StartAttempt(Loaded& l) {
  pb::Campaign& c = l.campaign;
  pb::Attempt& a = *l.attempt;
  if (a.worker_token_nonce().empty()) {
    // The token's nonce and the verified checkpoint first (synced): a retried Submit after a
    // crash must hand out the same ones.
    WriteBatch b;
    absl::StatusOr<checkpoints::Resume> resume = checkpoints_.PrepareResume(c, a, b);
    if (!resume.ok()) return resume.status();
    // Still hashing: what was found so far (corrupt checkpoints) is kept; next round.
    if (*resume == checkpoints::Resume::kPending)
      return b.empty() ? absl::OkStatus() : store_.Write(b, Durability::kSynced);
    a.set_worker_token_nonce(AttemptTokens::NewNonce());
    if (c.scheduler() == pb::SCHEDULER_KIND_SLURM) {
      if (absl::Status s = nodes_.PlanAttempt(b, c, a, l.spec); !s.ok()) return s;
    }
    store::Put(b, a);
    if (absl::Status s = store_.Write(b, Durability::kSynced); !s.ok()) return s;
    // No rank of the campaign runs now: what earlier attempts left half-written goes.
    checkpoints_.RemoveUncommittedSteps(c, l.spec.checkpoint.dir);
  }
  const sched::JobSpec job =
      JobFor(l, a.number(), a.worker_token_nonce(), /*resume_from_coordinator=*/false);
  absl::StatusOr<std::string> id = scheduler_.Submit(job);
  WriteBatch b;
  if (absl::IsUnavailable(id.status())) {
    // The scheduler cannot be reached (slurmctld down or rate-limited): not a refusal of the
    // job. The attempt stays queued with its token; the next round submits (idempotently).
    spdlog::warn("campaign {}: attempt {} not submitted yet: {}", c.id(), a.number(),
                 std::string(id.status().message()));
    return absl::OkStatus();
  }
  if (!id.ok()) {
    sched::JobStatus rejected;
    rejected.state = sched::JobState::kEnded;
    rejected.reason = pb::END_REASON_SCHEDULER_REJECTED;
    rejected.message = std::string(id.status().message());
    return EndAttempt(l, rejected);
  }
  a.set_scheduler_job_id(*id);
  a.set_state(pb::ATTEMPT_STATE_STARTING);
  SetTime(a.mutable_start_time(), clock_.Now());
  tokens_[DigestOf(c.id(), a.number(), a.worker_token_nonce())] = RefOf(l);
  store::Put(b, a);
  store::Put(b, c);
  if (absl::Status s = events_.Add(
          b, c, pb::EVENT_KIND_ATTEMPT_STARTING, pb::SEVERITY_INFO,
          Cat("attempt ", a.number(), " started as job ", *id, " (", a.world_size(), " ranks",
              a.has_start_checkpoint_step()
                  ? Cat(", from checkpoint step ", a.start_checkpoint_step())
                  : "",
              ")"),
          a.number());
      !s.ok()) {
    return s;
  }
  return store_.Write(b, Durability::kSynced);
}

absl::Status Supervisor::EndAttempt(Loaded& l, const sched::JobStatus& job) {
  const pb::Campaign& c = l.campaign;
  const pb::Attempt& a = *l.attempt;
  AttemptEndFacts facts;
  facts.job = job;
  facts.now = clock_.Now();
  absl::StatusOr<std::vector<pb::RankRecord>> ranks = RanksOf(store_, a);
  if (!ranks.ok()) return ranks.status();
  for (const pb::RankRecord& r : *ranks) {
    if (r.has_exit()) facts.finishes.push_back(r.exit());
  }
  absl::StatusOr<std::vector<pb::Attempt>> history = store::ListAttempts(store_, c.id());
  if (!history.ok()) return history.status();
  facts.history = std::move(*history);
  facts.jitter = 2.0 * jitter_.Uniform() - 1.0;
  absl::StatusOr<AttemptEndPlan> plan = PlanAttemptEnd(c, a, l.spec.restart, facts);
  if (!plan.ok()) return plan.status();
  l.campaign = plan->campaign;
  l.attempt = plan->ended;
  return CarryOutEnd(l, *plan);
}

absl::Status Supervisor::CarryOutEnd(Loaded& l, const AttemptEndPlan& p) {
  pb::Campaign& c = l.campaign;
  const pb::Attempt& a = p.ended;
  WriteBatch b;
  // Slow ranks count against Slurm nodes only (the local backend runs here).
  const std::vector<double> means =
      c.scheduler() == pb::SCHEDULER_KIND_SLURM
          ? monitor_.RankMeans(c.id(), a, options_.node_health.slow_min_steps)
          : std::vector<double>{};
  if (absl::Status s = nodes_.RecordHealth(b, c, a, p.cls, means); !s.ok()) return s;
  for (const PlannedEvent& e : p.events) {
    if (absl::Status s = events_.Add(b, c, e.kind, e.severity, e.message, e.attempt); !s.ok())
      return s;
  }
  if (p.rollback_to) {
    if (absl::Status s = checkpoints_.AbandonAfter(b, c, *p.rollback_to, a.number()); !s.ok())
      return s;
  }
  if (p.next && p.queued) {
    store::Put(b, *p.next);
    if (absl::Status s = events_.Add(b, c, p.queued->kind, p.queued->severity, p.queued->message,
                                     p.queued->attempt);
        !s.ok()) {
      return s;
    }
  }
  store::Put(b, a);
  store::Put(b, c);
  monitor_.EndOf(b, c.id(), a.number(), p.incident);
  tokens_.erase(DigestOf(c.id(), a.number(), a.worker_token_nonce()));
  cancel_signalled_.erase(c.id());
  if (absl::Status s = store_.Write(b, Durability::kSynced); !s.ok()) return s;
  if (!p.cancel_job.empty()) {
    successor_tokens_.erase(DigestOf(c.id(), a.number() + 1, a.successor_token_nonce()));
    // Still queued behind the job that just ended, or just started: either way it goes. If
    // the controller cannot be reached now, its ranks find their token refused and exit.
    if (absl::Status s = scheduler_.Signal(p.cancel_job, SIGKILL); !s.ok()) {
      spdlog::warn("campaign {}: presubmitted job {} not cancelled: {}", c.id(), p.cancel_job,
                   std::string(s.message()));
    }
  }
  return absl::OkStatus();
}

absl::Status Supervisor::OnStep(const std::string& id, int32_t attempt, pb::StepMetrics m) {
  // The summaries of a large attempt's arrays take a while: not under the lock heartbeats
  // and other calls wait for.
  pb::StepMetrics stored = StoredStepRecord(m);
  MutexLock lock(&mu_);
  absl::StatusOr<Loaded> l = Load(id);
  if (!l.ok()) return l.status();
  if (!l->attempt || l->attempt->number() != attempt ||
      l->attempt->state() == pb::ATTEMPT_STATE_ENDED) {
    return absl::OkStatus();
  }
  pb::Campaign& c = l->campaign;
  pb::Attempt& a = *l->attempt;
  m.set_attempt_number(attempt);
  if (!m.has_time()) SetTime(m.mutable_time(), clock_.Now());
  stored.set_attempt_number(attempt);
  *stored.mutable_time() = m.time();
  WriteBatch b;
  store::Put(b, id, stored);
  Durability durability = Durability::kBuffered;
  if (m.step() > c.current_step()) {
    c.set_current_step(m.step());
    c.set_tokens_seen(m.tokens_seen() > 0 ? m.tokens_seen() : m.step() * c.tokens_per_step());
  }
  a.set_last_step(std::max(a.last_step(), m.step()));
  bool attempt_changed = false;  // beyond its progress, which is written at a bounded rate
  if (a.first_step() == 0) {
    a.set_first_step(m.step());
    SetTime(a.mutable_first_step_time(), clock_.Now());
    attempt_changed = true;
  }
  SetTime(a.mutable_last_progress_time(), clock_.Now());
  monitor_.OnStep(b, id, a, m);
  if (!std::isfinite(m.loss()) && a.end_reason() == pb::END_REASON_UNSPECIFIED) {
    attempt_changed = true;
    a.set_end_reason(pb::END_REASON_NAN);
    a.set_end_message(Cat("loss ", m.loss(), " at step ", m.step()));
    pb::StepRange* skip = a.add_skipped_data();
    skip->set_first(m.step());
    skip->set_last(m.step());
    if (absl::Status s =
            events_.Add(b, c, pb::EVENT_KIND_ROLLBACK, pb::SEVERITY_WARNING,
                        Cat("non-finite loss at step ", m.step(), ": stopping attempt ", attempt,
                            " to roll back to the last good checkpoint"),
                        attempt);
        !s.ok()) {
      return s;
    }
    durability = Durability::kSynced;
  }
  if (c.has_last_checkpoint_step() &&
      (!c.has_last_good_checkpoint_step() ||
       c.last_good_checkpoint_step() < c.last_checkpoint_step()) &&
      m.step() >= c.last_checkpoint_step() + options_.good_after_steps &&
      a.end_reason() == pb::END_REASON_UNSPECIFIED) {
    if (absl::Status s = checkpoints_.MarkGood(b, c, options_.good_after_steps, attempt); !s.ok())
      return s;
    durability = Durability::kSynced;
  }
  // The attempt record (with the nodes of a large job, hundreds of KB) is rewritten for its
  // progress at most every attempt_write_interval; Load() shows the latest from memory.
  if (monitor_.AttemptRecordDue(id, attempt, attempt_changed)) store::Put(b, a);
  store::Put(b, c);
  absl::Status s = store_.Write(b, durability);
  monitor_.KeepEvidence(id, attempt, std::move(m));
  if (s.ok() && a.end_reason() == pb::END_REASON_NAN && durability == Durability::kSynced) {
    return scheduler_.Signal(a.scheduler_job_id(), SIGKILL);
  }
  return s;
}

absl::Status Supervisor::OnEval(const std::string& id, int32_t attempt, pb::EvalMetrics m) {
  MutexLock lock(&mu_);
  m.set_attempt_number(attempt);
  if (!m.has_time()) SetTime(m.mutable_time(), clock_.Now());
  if (m.dataset().empty()) m.set_dataset("val");
  WriteBatch b;
  store::Put(b, id, m);
  return store_.Write(b, Durability::kBuffered);
}

absl::StatusOr<Supervisor::ShardReceipt> Supervisor::OnShard(const std::string& id, int32_t attempt,
                                                             const pb::CheckpointShard& shard,
                                                             const pb::StepMetrics* metrics) {
  MutexLock lock(&mu_);
  absl::StatusOr<Loaded> l = Load(id);
  if (!l.ok()) return l.status();
  ShardReceipt out;
  if (!l->attempt || l->attempt->number() != attempt ||
      l->attempt->state() == pb::ATTEMPT_STATE_ENDED) {
    out.message = Cat("attempt ", attempt, " is not running: its shard is not recorded");
    return out;
  }
  pb::Campaign& c = l->campaign;
  pb::Attempt& a = *l->attempt;
  out.expected = a.world_size();
  if (a.end_reason() == pb::END_REASON_NAN) {
    out.message =
        "the attempt is stopping after a non-finite loss: its checkpoints are not committed";
    return out;
  }
  return checkpoints_.AddShard(c, l->spec.checkpoint, attempt, a.world_size(), shard, metrics);
}

absl::Status Supervisor::OnSaveFailed(const std::string& id, int32_t attempt, int64_t step,
                                      const std::string& message) {
  MutexLock lock(&mu_);
  absl::StatusOr<std::optional<pb::Campaign>> c = store::GetCampaign(store_, id);
  if (!c.ok()) return c.status();
  if (!c->has_value()) return absl::NotFoundError(Cat("no campaign ", id));
  WriteBatch b;
  if (absl::Status s =
          events_.Add(b, **c, pb::EVENT_KIND_CHECKPOINT_SAVE_FAILED, pb::SEVERITY_WARNING,
                      Cat("checkpoint at step ", step, " failed: ", message.substr(0, 2000),
                          "; training goes on"),
                      attempt);
      !s.ok()) {
    return s;
  }
  return store_.Write(b, Durability::kSynced);
}

void Supervisor::OnHeartbeat(const std::string& id, int32_t attempt, int32_t rank, int64_t step,
                             pb::WorkerPhase phase) {
  monitor_.OnHeartbeat(id, attempt, rank, step, phase);
}

absl::Status Supervisor::OnFinish(const std::string& id, int32_t attempt, pb::RankExit exit) {
  MutexLock lock(&mu_);
  return RecordRankExit(store_, id, attempt, std::move(exit));
}

absl::Status Supervisor::OnRegister(const std::string& campaign_id, int32_t attempt, int32_t rank,
                                    const std::string& node) {
  MutexLock lock(&mu_);
  return RecordRankNode(store_, campaign_id, attempt, rank, node);
}

std::string Supervisor::DigestOf(const std::string& campaign_id, int32_t attempt,
                                 const std::string& nonce) const {
  return attempt_tokens_.Digest(attempt_tokens_.Token(campaign_id, attempt, nonce));
}

bool Supervisor::IsRunning(const std::string& id, int32_t attempt) const {
  MutexLock lock(&mu_);
  for (const auto& [digest, ref] : tokens_) {
    if (ref.campaign_id == id && ref.attempt == attempt) return true;
  }
  return false;
}

bool Supervisor::IsWaitingSuccessorToken(const std::string& token) const {
  if (token.empty()) return false;
  const std::string digest = attempt_tokens_.Digest(token);
  MutexLock lock(&mu_);
  return successor_tokens_.contains(digest);
}

std::optional<Supervisor::AttemptRef> Supervisor::AttemptOfToken(const std::string& token) const {
  if (token.empty()) return std::nullopt;
  const std::string digest = attempt_tokens_.Digest(token);
  MutexLock lock(&mu_);
  auto it = tokens_.find(digest);
  if (it == tokens_.end()) return std::nullopt;
  return it->second;
}

}  // namespace belay::supervisor
