// CoordinatorService: who is calling, what they may see, conversion.
#include "daemon/rpc/coordinator_service.h"

#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <thread>

#include "common/campaign_spec.h"
#include "common/isolated_spec_check.h"
#include "common/strings.h"
#include "daemon/rpc/grpc_status.h"
#include "daemon/rpc/metrics_query.h"
#include "daemon/scheduler/identity.h"
#include "daemon/scheduler/rank_files.h"
#include "daemon/store/records.h"
#include "daemon/supervisor/goodput.h"
#include "daemon/supervisor/node_health.h"
#include "daemon/supervisor/policy.h"

namespace belay::rpc {
namespace {

namespace fs = std::filesystem;
using supervisor::FromTimestamp;

// Every listing answers in bounded pages, whatever the request asks.
constexpr size_t kMaxCampaigns = 1000;
constexpr size_t kMaxEvents = 1000;
constexpr size_t kMaxCheckpoints = 1000;
constexpr size_t kMaxNodes = 5000;
constexpr size_t kMaxListingBytes = size_t{4} << 20;

// A request's limit, bounded by the server's cap (0: the cap).
size_t PageSize(int32_t asked, size_t cap) {
  return asked > 0 ? std::min(static_cast<size_t>(asked), cap) : cap;
}
using supervisor::SetTime;

std::string UserName(uid_t uid) {
  struct passwd pw, *out = nullptr;
  char buf[4096];
  if (getpwuid_r(uid, &pw, buf, sizeof buf, &out) == 0 && out != nullptr) return out->pw_name;
  return Cat("uid", uid);
}

// Attempts as the API shows them: without the workers' secret.
void AddAttempts(const std::vector<v1::Attempt>& attempts, v1::GetCampaignResponse* resp) {
  for (v1::Attempt a : attempts) {
    a.clear_worker_token_nonce();
    a.clear_successor_token_nonce();
    *resp->add_attempts() = std::move(a);
  }
}

}  // namespace

absl::StatusOr<PeerCredentials> CoordinatorService::Caller(const grpc::ServerContext* ctx) const {
  std::optional<PeerCredentials> c = peers_.Lookup(ctx->peer());
  if (!c)
    return absl::UnauthenticatedError("the coordinator API is served on belayd's Unix socket only");
  return *c;
}

absl::StatusOr<v1::Campaign> CoordinatorService::Visible(const grpc::ServerContext* ctx,
                                                         const std::string& id) const {
  absl::StatusOr<PeerCredentials> who = Caller(ctx);
  if (!who.ok()) return who.status();
  if (absl::Status s = store::ValidateId("campaign id", id); !s.ok()) return s;
  absl::StatusOr<std::optional<v1::Campaign>> c = store::GetCampaign(store_, id);
  if (!c.ok()) return c.status();
  if (!c->has_value() || (who->uid != 0 && (*c)->owner_uid() != who->uid)) {
    return absl::NotFoundError(Cat("no campaign ", id));
  }
  return **c;
}

void SetRecentRates(const std::vector<v1::StepMetrics>& recent, int64_t steps_left, TimePoint now,
                    v1::Progress* p) {
  if (recent.empty()) return;
  // Running means: a sum of the reports' values (each finite, not negative) could overflow
  // to infinity; a running mean stays within them.
  double tps = 0, st = 0, n = 0;
  for (const v1::StepMetrics& x : recent) {
    n += 1;
    tps += (x.tokens_per_s() - tps) / n;
    st += (x.step_time_s() - st) / n;
  }
  p->set_tokens_per_s(tps);
  p->set_step_time_s(st);
  if (!(st > 0) || steps_left <= 0) return;
  const double eta = st * static_cast<double>(steps_left);
  if (!(eta <= kMaxEtaSeconds)) return;  // also NaN and infinity
  p->mutable_eta()->set_seconds(static_cast<int64_t>(eta));
  SetTime(p->mutable_estimated_end_time(), now + std::chrono::duration_cast<TimePoint::duration>(
                                                     std::chrono::duration<double>(eta)));
}

absl::StatusOr<v1::Progress> CoordinatorService::ProgressOf(const v1::Campaign& c) const {
  v1::Progress p;
  p.set_campaign_id(c.id());
  SetTime(p.mutable_time(), clock_.Now());
  p.set_state(c.state());
  p.set_attempt_number(c.current_attempt());
  p.set_step(c.current_step());
  p.set_total_steps(c.total_steps());
  p.set_tokens_seen(c.tokens_seen());
  p.set_total_tokens(c.total_steps() * c.tokens_per_step());
  p.set_restarts_used(c.restarts_used());
  if (c.has_last_checkpoint_step()) p.set_last_checkpoint_step(c.last_checkpoint_step());
  absl::StatusOr<std::vector<v1::StepMetrics>> last =
      store::ListStepMetrics(store_, c.id(), 0, -1, 20, true);
  if (!last.ok()) return last.status();
  if (!last->empty()) {
    p.set_loss(last->back().loss());
    SetRecentRates(*last, c.total_steps() - c.current_step(), clock_.Now(), &p);
  }
  return p;
}

grpc::Status CoordinatorService::SubmitCampaign(grpc::ServerContext* ctx,
                                                const v1::SubmitCampaignRequest* req,
                                                v1::SubmitCampaignResponse* resp) {
  absl::StatusOr<PeerCredentials> who = Caller(ctx);
  if (!who.ok()) return ToGrpc(who.status());
  // A belayd that is not root can start ranks only as its own user: it takes campaigns from
  // that user (and root) only, instead of running another user's campaign as itself (and
  // before reading the file: its checks would probe paths with belayd's rights).
  if (const uid_t self = ::geteuid(); self != 0 && who->uid != self && who->uid != 0) {
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                        Cat("this belayd runs as ", UserName(self), " (uid ", self,
                            "), not as root, so it starts ranks "
                            "only as that user and takes campaigns only from it; submit to a "
                            "belayd of your own, or "
                            "to one running as root, which runs each campaign's ranks as the user "
                            "who submitted it"));
  }
  if (req->spec_toml().size() > kMaxSpecBytes) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        Cat("campaign file larger than ", kMaxSpecBytes, " bytes"));
  }
  SpecParseOptions o;
  o.check_paths = true;
  if (!req->spec_dir().empty()) o.base_dir = req->spec_dir();
  if (!o.base_dir.is_absolute() && !req->spec_toml().empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "spec_dir must be an absolute directory");
  }
  // The bytes are hostile until a child process has parsed them and lived (a parser crash
  // then ends the child, not belayd): see common/isolated_spec_check.h.
  if (absl::Status safe = CheckSpecInChild(req->spec_toml()); !safe.ok()) {
    if (!absl::IsInvalidArgument(safe)) return ToGrpc(safe);
    v1::SpecError* pe = resp->add_errors();
    pe->set_line(1);
    pe->set_column(1);
    pe->set_message(std::string(safe.message()));
    return grpc::Status::OK;
  }
  SpecParseResult parsed;
  {
    // The file's paths (data globs, a checkpoint directory to create) are checked with the
    // submitting user's rights, those its ranks will have, not with a root belayd's. (A
    // belayd that is not root runs everything as itself.)
    absl::StatusOr<std::unique_ptr<sched::FilesystemIdentity>> as_user =
        sched::FilesystemIdentity::Assume(
            ::geteuid() == 0 ? who->uid : static_cast<uint32_t>(::geteuid()),
            "who submits the campaign");
    if (!as_user.ok()) return ToGrpc(as_user.status());
    parsed = ParseCampaignSpec(req->spec_toml(),
                               req->spec_file().empty() ? "campaign.toml" : req->spec_file(), o);
  }
  for (const SpecError& e : parsed.errors) {
    v1::SpecError* pe = resp->add_errors();
    pe->set_line(static_cast<int32_t>(e.line));
    pe->set_column(static_cast<int32_t>(e.column));
    pe->set_key(e.key);
    pe->set_message(e.message);
  }
  if (!parsed.ok() || req->validate_only()) return grpc::Status::OK;
  if (parsed.spec->resources.scheduler == SchedulerKind::kSlurm && facts_.slurm_conf.empty()) {
    return grpc::Status(
        grpc::StatusCode::FAILED_PRECONDITION,
        "the campaign asks for scheduler \"slurm\"; this belayd knows no Slurm cluster "
        "(no slurm.conf: start it with --slurm-conf or SLURM_CONF)");
  }
  absl::StatusOr<v1::Campaign> c = supervisor_.Submit(
      *parsed.spec, req->spec_toml(), req->spec_file(), who->uid, UserName(who->uid));
  if (!c.ok()) return ToGrpc(c.status());
  *resp->mutable_campaign() = *c;
  return grpc::Status::OK;
}

grpc::Status CoordinatorService::ListCampaigns(grpc::ServerContext* ctx,
                                               const v1::ListCampaignsRequest* req,
                                               v1::ListCampaignsResponse* resp) {
  absl::StatusOr<PeerCredentials> who = Caller(ctx);
  if (!who.ok()) return ToGrpc(who.status());
  absl::StatusOr<std::vector<v1::Campaign>> all = store::ListCampaigns(store_);
  if (!all.ok()) return ToGrpc(all.status());
  std::vector<v1::Campaign> out;
  for (v1::Campaign& c : *all) {
    const bool mine = c.owner_uid() == who->uid;
    if (!mine && who->uid != 0) continue;
    if (!mine && !req->all_users()) continue;
    if (req->has_owner_uid() && c.owner_uid() != req->owner_uid()) continue;
    if (!req->states().empty() &&
        std::find(req->states().begin(), req->states().end(), c.state()) == req->states().end()) {
      continue;
    }
    c.clear_spec_toml();
    out.push_back(std::move(c));
  }
  std::sort(out.begin(), out.end(), [](const v1::Campaign& a, const v1::Campaign& b) {
    return FromTimestamp(a.submit_time()) > FromTimestamp(b.submit_time());
  });
  const size_t limit = PageSize(req->limit(), kMaxCampaigns);
  resp->set_more(out.size() > limit);
  if (out.size() > limit) out.resize(limit);
  for (v1::Campaign& c : out) *resp->add_campaigns() = std::move(c);
  return grpc::Status::OK;
}

grpc::Status CoordinatorService::GetCampaign(grpc::ServerContext* ctx,
                                             const v1::GetCampaignRequest* req,
                                             v1::GetCampaignResponse* resp) {
  absl::StatusOr<v1::Campaign> c = Visible(ctx, req->campaign_id());
  if (!c.ok()) return ToGrpc(c.status());
  absl::StatusOr<std::vector<v1::Attempt>> attempts = store::ListAttempts(store_, c->id());
  if (!attempts.ok()) return ToGrpc(attempts.status());
  AddAttempts(*attempts, resp);
  absl::StatusOr<std::vector<v1::Checkpoint>> checkpoints = store::ListCheckpoints(store_, c->id());
  if (!checkpoints.ok()) return ToGrpc(checkpoints.status());
  *resp->mutable_ledger() = supervisor::ComputeGoodput(*attempts, *checkpoints, clock_.Now());
  absl::StatusOr<v1::Progress> p = ProgressOf(*c);
  if (!p.ok()) return ToGrpc(p.status());
  *resp->mutable_progress() = *p;
  *resp->mutable_campaign() = std::move(*c);
  return grpc::Status::OK;
}

grpc::Status CoordinatorService::CancelCampaign(grpc::ServerContext* ctx,
                                                const v1::CancelCampaignRequest* req,
                                                v1::CancelCampaignResponse* resp) {
  absl::StatusOr<v1::Campaign> c = Visible(ctx, req->campaign_id());
  if (!c.ok()) return ToGrpc(c.status());
  if (absl::Status s = supervisor_.Cancel(c->id()); !s.ok()) return ToGrpc(s);
  absl::StatusOr<std::optional<v1::Campaign>> now = store::GetCampaign(store_, c->id());
  if (now.ok() && now->has_value()) *resp->mutable_campaign() = **now;
  return grpc::Status::OK;
}

grpc::Status CoordinatorService::WatchCampaign(
    grpc::ServerContext* ctx, const v1::WatchCampaignRequest* req,
    grpc::ServerWriter<v1::WatchCampaignResponse>* writer) {
  absl::StatusOr<v1::Campaign> c = Visible(ctx, req->campaign_id());
  if (!c.ok()) return ToGrpc(c.status());
  int64_t after = req->has_after_event_seq() ? req->after_event_seq() : -1;
  // The caller's interval, held to 0.1-60 s (computed without overflow for any proto value).
  auto interval = std::chrono::milliseconds(1000);
  if (req->has_progress_interval()) {
    const int64_t s = std::clamp<int64_t>(req->progress_interval().seconds(), 0, 60);
    const int64_t ms =
        s * 1000 +
        std::clamp<int32_t>(req->progress_interval().nanos(), 0, 999'999'999) / 1'000'000;
    interval = std::chrono::milliseconds(std::clamp<int64_t>(ms, 100, 60'000));
  }
  v1::WatchCampaignResponse first;
  *first.mutable_campaign() = *c;
  if (!writer->Write(first)) return grpc::Status::OK;
  for (;;) {
    absl::StatusOr<std::vector<v1::Event>> events = store::ListEvents(store_, c->id(), after, 1000);
    if (!events.ok()) return ToGrpc(events.status());
    for (const v1::Event& e : *events) {
      v1::WatchCampaignResponse r;
      *r.mutable_event() = e;
      if (!writer->Write(r)) return grpc::Status::OK;
      after = e.seq();
    }
    absl::StatusOr<std::optional<v1::Campaign>> now = store::GetCampaign(store_, c->id());
    if (!now.ok()) return ToGrpc(now.status());
    if (!now->has_value()) return grpc::Status(grpc::StatusCode::NOT_FOUND, "campaign vanished");
    absl::StatusOr<v1::Progress> p = ProgressOf(**now);
    if (!p.ok()) return ToGrpc(p.status());
    v1::WatchCampaignResponse r;
    *r.mutable_progress() = *p;
    if (!writer->Write(r)) return grpc::Status::OK;
    if (supervisor::IsTerminal((*now)->state()) && events->empty()) {
      v1::WatchCampaignResponse last;
      *last.mutable_campaign() = **now;
      writer->Write(last);
      return grpc::Status::OK;
    }
    // Sleeps in short slices, so that a cancelled call ends within 100 ms.
    for (auto slept = std::chrono::milliseconds(0); slept < interval;
         slept += std::chrono::milliseconds(100)) {
      if (ctx->IsCancelled()) return grpc::Status::CANCELLED;
      std::this_thread::sleep_for(std::min(std::chrono::milliseconds(100), interval - slept));
    }
  }
}

grpc::Status CoordinatorService::QueryMetrics(grpc::ServerContext* ctx,
                                              const v1::QueryMetricsRequest* req,
                                              v1::QueryMetricsResponse* resp) {
  absl::StatusOr<v1::Campaign> c = Visible(ctx, req->campaign_id());
  if (!c.ok()) return ToGrpc(c.status());
  return ToGrpc(rpc::QueryMetrics(store_, *c, *req, resp));
}

grpc::Status CoordinatorService::ListEvents(grpc::ServerContext* ctx,
                                            const v1::ListEventsRequest* req,
                                            v1::ListEventsResponse* resp) {
  absl::StatusOr<v1::Campaign> c = Visible(ctx, req->campaign_id());
  if (!c.ok()) return ToGrpc(c.status());
  const size_t limit = PageSize(req->limit(), kMaxEvents);
  absl::StatusOr<std::vector<v1::Event>> events =
      store::ListEvents(store_, c->id(), req->after_seq() > 0 ? req->after_seq() : -1, limit + 1);
  if (!events.ok()) return ToGrpc(events.status());
  resp->set_more(events->size() > limit);
  if (events->size() > limit) events->resize(limit);
  for (const v1::Event& e : *events) {
    resp->set_next_after_seq(e.seq());
    if (e.severity() < req->min_severity()) continue;
    *resp->add_events() = e;
  }
  return grpc::Status::OK;
}

grpc::Status CoordinatorService::ListCheckpoints(grpc::ServerContext* ctx,
                                                 const v1::ListCheckpointsRequest* req,
                                                 v1::ListCheckpointsResponse* resp) {
  absl::StatusOr<v1::Campaign> c = Visible(ctx, req->campaign_id());
  if (!c.ok()) return ToGrpc(c.status());
  const size_t limit = PageSize(req->limit(), kMaxCheckpoints);
  absl::StatusOr<std::vector<v1::Checkpoint>> page = store::ListCheckpointsBefore(
      store_, c->id(), req->has_before_step() ? req->before_step() : -1, limit + 1);
  if (!page.ok()) return ToGrpc(page.status());
  size_t bytes = 0, examined = 0;
  for (v1::Checkpoint& ck : *page) {
    if (examined == limit || (bytes > 0 && bytes + ck.ByteSizeLong() > kMaxListingBytes)) {
      resp->set_more(true);
      break;
    }
    ++examined;
    resp->set_next_before_step(ck.step());
    if (ck.state() == v1::CHECKPOINT_STATE_DELETED && !req->include_deleted()) continue;
    if (!req->include_shards()) ck.clear_shards();
    bytes += ck.ByteSizeLong();
    *resp->add_checkpoints() = std::move(ck);
  }
  return grpc::Status::OK;
}

grpc::Status CoordinatorService::ListNodes(grpc::ServerContext* ctx,
                                           const v1::ListNodesRequest* req,
                                           v1::ListNodesResponse* resp) {
  absl::StatusOr<PeerCredentials> who = Caller(ctx);
  if (!who.ok()) return ToGrpc(who.status());
  const size_t limit = PageSize(req->limit(), kMaxNodes);
  absl::StatusOr<std::vector<v1::Node>> nodes =
      store::ListNodes(store_, req->after_name(), limit + 1);
  if (!nodes.ok()) return ToGrpc(nodes.status());
  resp->set_more(nodes->size() > limit);
  if (nodes->size() > limit) nodes->resize(limit);
  if (!nodes->empty()) resp->set_next_after_name(nodes->back().name());
  for (const v1::Node& stored : *nodes) {
    // As of now: reputation recovered since the record was written, lapsed exclusions lifted.
    const v1::Node n = supervisor::Decayed(stored, clock_.Now(), supervisor_.node_health());
    if (req->excluded_only() && !n.excluded()) continue;
    if (!req->names().empty() &&
        std::find(req->names().begin(), req->names().end(), n.name()) == req->names().end()) {
      continue;
    }
    *resp->add_nodes() = n;
  }
  return grpc::Status::OK;
}

grpc::Status CoordinatorService::GetLogs(grpc::ServerContext* ctx, const v1::GetLogsRequest* req,
                                         v1::GetLogsResponse* resp) {
  absl::StatusOr<v1::Campaign> c = Visible(ctx, req->campaign_id());
  if (!c.ok()) return ToGrpc(c.status());
  const int32_t attempt = req->attempt_number() > 0 ? req->attempt_number() : c->current_attempt();
  if (attempt <= 0)
    return grpc::Status(grpc::StatusCode::NOT_FOUND, "the campaign has no attempt yet");
  const int32_t rank = req->has_rank() ? req->rank() : 0;
  if (rank < 0) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "rank must be >= 0");
  const fs::path path = facts_.state_dir / "campaigns" / c->id() / Cat("attempt_", attempt) /
                        fmt::format("rank_{:05d}.log", rank);
  resp->set_attempt_number(attempt);
  resp->set_path(path.string());
  // The attempt's directory may be the owner's (ranks running as that user): read only a
  // regular file of theirs or belayd's, not through a symlink, never blocking on a FIFO.
  struct stat st {};
  const int fd = sched::OpenRankFile(path, &st);
  if (fd < 0 && errno == ENOENT)
    return grpc::Status(grpc::StatusCode::NOT_FOUND, Cat(path.string(), ": no log (yet)"));
  const bool theirs = fd >= 0 && (st.st_uid == c->owner_uid() || st.st_uid == ::geteuid());
  if (!theirs) {
    if (fd >= 0) ::close(fd);
    return grpc::Status(
        grpc::StatusCode::FAILED_PRECONDITION,
        Cat(path.string(), ": not a regular file of the campaign's owner; not read"));
  }
  const int64_t size = static_cast<int64_t>(st.st_size);
  resp->set_file_bytes(size);
  constexpr int64_t kMaxChunk = 1 << 20;
  int64_t from =
      req->has_from_offset()
          ? std::clamp<int64_t>(req->from_offset(), 0, size)
          : std::max<int64_t>(0, size - (req->tail_bytes() > 0 ? req->tail_bytes() : 64 << 10));
  const int64_t len = std::min(kMaxChunk, size - from);
  std::string data(static_cast<size_t>(len), '\0');
  const ssize_t got = len > 0 ? ::pread(fd, data.data(), static_cast<size_t>(len), from) : 0;
  ::close(fd);
  data.resize(static_cast<size_t>(std::max<ssize_t>(got, 0)));
  resp->set_offset(from);
  resp->set_data(std::move(data));
  return grpc::Status::OK;
}

grpc::Status CoordinatorService::GetDaemonInfo(grpc::ServerContext* ctx,
                                               const v1::GetDaemonInfoRequest*,
                                               v1::GetDaemonInfoResponse* resp) {
  absl::StatusOr<PeerCredentials> who = Caller(ctx);
  if (!who.ok()) return ToGrpc(who.status());
  resp->set_version(facts_.version);
  resp->set_scheduler(facts_.scheduler);
  resp->set_state_dir(facts_.state_dir.string());
  resp->set_store_schema_version(store::kSchemaVersion);
  absl::Status w = store_.write_error();
  resp->set_read_only(!w.ok());
  resp->set_read_only_reason(std::string(w.message()));
  resp->set_worker_listen_address(facts_.worker_listen_address);
  SetTime(resp->mutable_start_time(), facts_.start_time);
  resp->set_caller_uid(who->uid);
  resp->set_caller_is_operator(who->uid == 0);
  if (facts_.slurm_calls) {
    const sched::ControllerCalls calls = facts_.slurm_calls();
    resp->set_slurm_rpcs(calls.made);
    resp->set_slurm_rpcs_refused(calls.refused);
  }
  resp->set_slurm_rpc_budget_per_minute(facts_.slurm_rpc_budget_per_minute);
  return grpc::Status::OK;
}

}  // namespace belay::rpc
