// WorkerLinkService: token check, conversion, supervisor call.
#include "daemon/rpc/worker_link_service.h"

#include <cmath>

#include "common/strings.h"
#include "daemon/checkpoints/catalog.h"
#include "daemon/rpc/grpc_status.h"
#include "spdlog/spdlog.h"

namespace belay::rpc {
namespace {

using supervisor::Supervisor;

grpc::Status Unauthenticated() {
  return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "unknown or expired attempt token");
}

grpc::Status Invalid(std::string message) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, std::move(message));
}

bool InRange(int64_t v, int64_t lo, int64_t hi) { return v >= lo && v <= hi; }
// A time or rate a worker measured: finite and not negative.
bool Measured(double v) { return std::isfinite(v) && v >= 0; }

grpc::Status CheckRank(int32_t rank, int32_t world_size, std::string_view what) {
  if (InRange(rank, 0, world_size - 1)) return grpc::Status::OK;
  return Invalid(Cat(what, ": rank ", rank, " is not in 0..", world_size - 1));
}

grpc::Status CheckStep(const v1::StepMetrics& m, int32_t world_size) {
  const std::string what = Cat("step report ", m.step());
  if (!InRange(m.step(), 1, kMaxStep)) return Invalid(Cat(what, ": step is not in 1..", kMaxStep));
  if (!Measured(m.step_time_s()) || !Measured(m.tokens_per_s()) || m.tokens_seen() < 0 ||
      !(m.goldfish_dropped_fraction() >= 0 && m.goldfish_dropped_fraction() <= 1)) {
    return Invalid(
        Cat(what,
            ": step_time_s, tokens_per_s, tokens_seen or goldfish_dropped_fraction out of range"));
  }
  for (const auto* per_rank : {&m.rank_step_time_s(), &m.rank_compute_time_s()}) {
    if (!per_rank->empty() && per_rank->size() != world_size) {
      return Invalid(
          Cat(what, ": ", per_rank->size(), " per-rank times for ", world_size, " ranks"));
    }
    for (double t : *per_rank) {
      if (!Measured(t)) return Invalid(Cat(what, ": a per-rank time of ", t, " s"));
    }
  }
  return grpc::Status::OK;
}

grpc::Status CheckEval(const v1::EvalMetrics& m) {
  if (!InRange(m.step(), 0, kMaxStep) || m.dataset().size() > 256 || m.tokens() < 0 ||
      !Measured(m.eval_time_s())) {
    return Invalid(Cat("evaluation at step ", m.step(),
                       ": step, dataset (up to 256 bytes), tokens or eval_time_s "
                       "out of range"));
  }
  return grpc::Status::OK;
}

grpc::Status CheckShard(const v1::CheckpointShard& shard, int32_t world_size) {
  if (grpc::Status s = CheckRank(shard.rank(), world_size, "checkpoint shard"); !s.ok()) return s;
  if (!InRange(shard.step(), 0, kMaxStep) ||
      !InRange(shard.bytes(), 0, checkpoints::kMaxShardBytes) || shard.path().size() > 4096 ||
      shard.tensors_size() > kMaxShardTensors ||
      !InRange(shard.tensor_count(), 0, kMaxShardTensors) || !Measured(shard.write_time_s()) ||
      !Measured(shard.blocked_time_s())) {
    return Invalid(Cat("shard of rank ", shard.rank(), " step ", shard.step(),
                       ": step, bytes, path (up to 4096 bytes), ", "tensors (up to ",
                       kMaxShardTensors, "), write_time_s or blocked_time_s out of range"));
  }
  return grpc::Status::OK;
}

// `text` cut to at most `max` bytes, at a UTF-8 character boundary (a protobuf string must
// stay valid UTF-8).
std::string Bounded(const std::string& text, size_t max) {
  if (text.size() <= max) return text;
  size_t end = max;
  while (end > 0 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) --end;
  return text.substr(0, end) + "...";
}

}  // namespace

std::chrono::seconds HeartbeatInterval(int32_t world_size) {
  const int64_t spread =
      (std::max<int64_t>(world_size, 0) + kMaxHeartbeatsPerSecond - 1) / kMaxHeartbeatsPerSecond;
  return std::chrono::seconds(std::max<int64_t>(5, spread));
}

grpc::Status WorkerLinkService::Register(grpc::ServerContext*, const v1::RegisterRequest* req,
                                         v1::RegisterResponse* resp) {
  std::optional<Supervisor::AttemptRef> a = supervisor_.AttemptOfToken(req->attempt_token());
  if (!a && supervisor_.IsWaitingSuccessorToken(req->attempt_token())) {
    // A presubmitted job that started before belayd handed it to its attempt: ask again.
    return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                        "this job's attempt is not started yet; register again");
  }
  if (!a) return Unauthenticated();
  if (req->world_size() != a->world_size || req->rank() < 0 || req->rank() >= a->world_size) {
    return grpc::Status(
        grpc::StatusCode::INVALID_ARGUMENT,
        Cat("rank ", req->rank(), " of ", req->world_size(), " does not fit attempt ", a->attempt,
            " of campaign ", a->campaign_id, " (", a->world_size, " ranks)"));
  }
  // Where the rank runs is bookkeeping (slow-rank attribution): a store that cannot take it
  // does not keep the rank from training.
  if (absl::Status s =
          supervisor_.OnRegister(a->campaign_id, a->attempt, req->rank(), req->hostname());
      !s.ok()) {
    spdlog::warn("campaign {} attempt {}: rank {}'s node not recorded: {}", a->campaign_id,
                 a->attempt, req->rank(), std::string(s.message()));
  }
  resp->set_campaign_id(a->campaign_id);
  resp->set_attempt_number(a->attempt);
  if (!a->resume_dir.empty()) resp->mutable_resume_checkpoint()->set_dir(a->resume_dir);
  resp->mutable_heartbeat_interval()->set_seconds(HeartbeatInterval(a->world_size).count());
  resp->mutable_report_interval()->set_seconds(1);
  return grpc::Status::OK;
}

grpc::Status WorkerLinkService::Rendezvous(grpc::ServerContext* ctx,
                                           const v1::RendezvousRequest* req,
                                           v1::RendezvousResponse* resp) {
  std::optional<Supervisor::AttemptRef> a = supervisor_.AttemptOfToken(req->attempt_token());
  if (!a) return Unauthenticated();
  if (req->rank() < 0 || req->rank() >= a->world_size || req->generation() < 1 ||
      req->barrier().empty() || req->barrier().size() > 256 || req->blob().size() > (64 << 10)) {
    return grpc::Status(
        grpc::StatusCode::INVALID_ARGUMENT,
        Cat("rendezvous of rank ", req->rank(), " of ", a->world_size, ", barrier \"",
            req->barrier().substr(0, 64), "\" generation ", req->generation(),
            ": ranks, a generation >= 1, a name of 1-256 bytes and a blob up to 64 KiB"));
  }
  const auto key = std::make_tuple(a->campaign_id, a->attempt, req->barrier(), req->generation());
  absl::Time deadline = absl::Now() + max_rendezvous_wait_;
  // Answer a little before the caller's deadline, so that it hears who is missing instead of
  // its own timeout.
  if (ctx != nullptr)
    deadline = std::min(deadline, absl::FromChrono(ctx->deadline()) - absl::Milliseconds(250));
  MutexLock lock(&mu_);
  auto found = barriers_.find(key);
  if (found == barriers_.end()) {
    // A new barrier: the barriers of attempts that have ended go first, then the attempt's
    // count is checked.
    ForgetEndedAttempts();
    const auto attempt_key = std::make_pair(a->campaign_id, a->attempt);
    if (barriers_per_attempt_[attempt_key] >= kMaxBarriersPerAttempt) {
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                          Cat("attempt ", a->attempt, " of campaign ", a->campaign_id, " has ",
                              kMaxBarriersPerAttempt, " rendezvous barriers already"));
    }
    ++barriers_per_attempt_[attempt_key];
    found = barriers_.emplace(key, Barrier{}).first;
  }
  Barrier& b = found->second;
  if (req->rank() == 0) {
    if (b.blob && *b.blob != req->blob()) {
      return grpc::Status(grpc::StatusCode::ALREADY_EXISTS,
                          Cat("barrier \"", req->barrier(), "\" generation ", req->generation(),
                              " already has a different blob from rank 0"));
    }
    b.blob = req->blob();
  }
  b.arrived.insert(req->rank());
  if (static_cast<int32_t>(b.arrived.size()) == a->world_size && b.blob) {
    b.complete = true;
    barrier_changed_.SignalAll();
  }
  // Wakes at least every second to notice a cancelled call.
  ++b.waiters;
  while (!b.complete && absl::Now() < deadline && !(ctx != nullptr && ctx->IsCancelled())) {
    barrier_changed_.WaitWithDeadline(&mu_, std::min(deadline, absl::Now() + absl::Seconds(1)));
  }
  --b.waiters;
  if (!b.complete) {
    std::string missing;
    for (int32_t r = 0; r < a->world_size; ++r) {
      if (!b.arrived.contains(r)) missing += Cat(missing.empty() ? "" : ", ", r);
    }
    return grpc::Status(
        grpc::StatusCode::DEADLINE_EXCEEDED,
        Cat("barrier \"", req->barrier(), "\" generation ", req->generation(), ": ",
            b.arrived.size(), " of ", a->world_size, " ranks arrived; missing ", missing));
  }
  resp->set_blob(*b.blob);
  resp->set_world_size(a->world_size);
  resp->set_generation(req->generation());
  return grpc::Status::OK;
}

void WorkerLinkService::ForgetEndedAttempts() {
  for (auto it = barriers_per_attempt_.begin(); it != barriers_per_attempt_.end();) {
    if (supervisor_.IsRunning(it->first.first, it->first.second)) {
      ++it;
      continue;
    }
    // Barriers sort by (campaign, attempt) first: this attempt's are one range.
    auto first = barriers_.lower_bound(
        std::make_tuple(it->first.first, it->first.second, std::string(), int64_t{0}));
    auto last = first;
    while (last != barriers_.end() && std::get<0>(last->first) == it->first.first &&
           std::get<1>(last->first) == it->first.second) {
      ++last;
    }
    // A call still waiting on one of them holds a reference: those stay until they are done.
    bool waited_on = false;
    for (auto b = first; b != last; ++b) waited_on = waited_on || b->second.waiters > 0;
    if (waited_on) {
      ++it;
      continue;
    }
    barriers_.erase(first, last);
    it = barriers_per_attempt_.erase(it);
  }
}

size_t WorkerLinkService::barrier_count() const {
  MutexLock lock(&mu_);
  return barriers_.size();
}

grpc::Status WorkerLinkService::Heartbeat(grpc::ServerContext*, const v1::HeartbeatRequest* req,
                                          v1::HeartbeatResponse* resp) {
  std::optional<Supervisor::AttemptRef> a = supervisor_.AttemptOfToken(req->attempt_token());
  if (!a) return Unauthenticated();
  if (grpc::Status s = CheckRank(req->rank(), a->world_size, "heartbeat"); !s.ok()) return s;
  if (!InRange(req->step(), 0, kMaxStep))
    return Invalid(Cat("heartbeat: step ", req->step(), " is not in 0..", kMaxStep));
  supervisor_.OnHeartbeat(a->campaign_id, a->attempt, req->rank(), req->step(), req->phase());
  resp->mutable_heartbeat_interval()->set_seconds(HeartbeatInterval(a->world_size).count());
  return grpc::Status::OK;
}

grpc::Status WorkerLinkService::ReportSteps(grpc::ServerContext*, const v1::ReportStepsRequest* req,
                                            v1::ReportStepsResponse* resp) {
  std::optional<Supervisor::AttemptRef> a = supervisor_.AttemptOfToken(req->attempt_token());
  if (!a) return Unauthenticated();
  if (req->steps_size() + req->evals_size() > kMaxReportsPerCall) {
    return Invalid(Cat(req->steps_size() + req->evals_size(), " reports in one call; at most ",
                       kMaxReportsPerCall));
  }
  // All checked before any is stored: a report is taken whole or not at all.
  for (const v1::StepMetrics& m : req->steps()) {
    if (grpc::Status s = CheckStep(m, a->world_size); !s.ok()) return s;
  }
  for (const v1::EvalMetrics& m : req->evals()) {
    if (grpc::Status s = CheckEval(m); !s.ok()) return s;
  }
  int64_t through = 0;
  for (const v1::StepMetrics& m : req->steps()) {
    if (absl::Status s = supervisor_.OnStep(a->campaign_id, a->attempt, m); !s.ok())
      return ToGrpc(s);
    through = std::max(through, m.step());
    resp->set_accepted(resp->accepted() + 1);
  }
  for (const v1::EvalMetrics& m : req->evals()) {
    if (absl::Status s = supervisor_.OnEval(a->campaign_id, a->attempt, m); !s.ok())
      return ToGrpc(s);
    resp->set_accepted(resp->accepted() + 1);
  }
  resp->set_stored_through_step(through);
  return grpc::Status::OK;
}

grpc::Status WorkerLinkService::ReportCheckpointShard(grpc::ServerContext*,
                                                      const v1::ReportCheckpointShardRequest* req,
                                                      v1::ReportCheckpointShardResponse* resp) {
  std::optional<Supervisor::AttemptRef> a = supervisor_.AttemptOfToken(req->attempt_token());
  if (!a) return Unauthenticated();
  const v1::CheckpointShard& shard = req->shard();
  if (grpc::Status s = CheckShard(shard, a->world_size); !s.ok()) return s;
  if (req->has_step_metrics()) {
    if (grpc::Status s = CheckStep(req->step_metrics(), a->world_size); !s.ok()) return s;
  }
  resp->set_shards_expected(a->world_size);
  if (!req->error().empty()) {
    absl::Status s = supervisor_.OnSaveFailed(a->campaign_id, a->attempt, shard.step(),
                                              Bounded(req->error(), kMaxText));
    if (!s.ok()) return ToGrpc(s);
    resp->set_accepted(true);
    resp->set_message("save failure recorded");
    return grpc::Status::OK;
  }
  absl::StatusOr<Supervisor::ShardReceipt> r = supervisor_.OnShard(
      a->campaign_id, a->attempt, shard, req->has_step_metrics() ? &req->step_metrics() : nullptr);
  if (!r.ok()) return ToGrpc(r.status());
  resp->set_accepted(r->message.empty() || r->committed);
  resp->set_message(r->message);
  resp->set_committed(r->committed);
  resp->set_shards_reported(r->reported);
  return grpc::Status::OK;
}

grpc::Status WorkerLinkService::Finish(grpc::ServerContext*, const v1::FinishRequest* req,
                                       v1::FinishResponse*) {
  std::optional<Supervisor::AttemptRef> a = supervisor_.AttemptOfToken(req->attempt_token());
  if (!a) return Unauthenticated();
  if (grpc::Status s = CheckRank(req->rank(), a->world_size, "finish"); !s.ok()) return s;
  if (!InRange(req->final_step(), 0, kMaxStep))
    return Invalid(Cat("finish: final step ", req->final_step()));
  v1::RankExit e;
  e.set_rank(req->rank());
  e.set_exit_kind(req->exit_kind());
  e.set_error_reason(req->error_reason());
  e.set_message(Bounded(req->message(), kMaxText));
  e.set_last_step(req->final_step());
  return ToGrpc(supervisor_.OnFinish(a->campaign_id, a->attempt, e));
}

}  // namespace belay::rpc
