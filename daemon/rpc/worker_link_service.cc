// WorkerLinkService: token check, conversion, supervisor call.
#include "daemon/rpc/worker_link_service.h"

#include "common/strings.h"
#include "spdlog/spdlog.h"

namespace belay::rpc {
namespace {

using supervisor::Supervisor;

grpc::Status Unauthenticated() {
  return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "unknown or expired attempt token");
}

}  // namespace

grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(static_cast<int>(s.code())), std::string(s.message()));
}

grpc::Status WorkerLinkService::Register(grpc::ServerContext*, const v1::RegisterRequest* req,
                                         v1::RegisterResponse* resp) {
  std::optional<Supervisor::AttemptRef> a = supervisor_.AttemptOfToken(req->attempt_token());
  if (!a && supervisor_.IsWaitingSuccessorToken(req->attempt_token())) {
    // A presubmitted job that started before belayd handed it to its attempt: ask again.
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "this job's attempt is not started yet; register again");
  }
  if (!a) return Unauthenticated();
  if (req->world_size() != a->world_size || req->rank() < 0 || req->rank() >= a->world_size) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        Cat("rank ", req->rank(), " of ", req->world_size(), " does not fit attempt ", a->attempt,
                            " of campaign ", a->campaign_id, " (", a->world_size, " ranks)"));
  }
  // Where the rank runs is bookkeeping (slow-rank attribution): a store that cannot take it
  // does not keep the rank from training.
  if (absl::Status s = supervisor_.OnRegister(a->campaign_id, a->attempt, req->rank(), req->hostname()); !s.ok()) {
    spdlog::warn("campaign {} attempt {}: rank {}'s node not recorded: {}", a->campaign_id, a->attempt, req->rank(),
                 std::string(s.message()));
  }
  resp->set_campaign_id(a->campaign_id);
  resp->set_attempt_number(a->attempt);
  if (!a->resume_dir.empty()) resp->mutable_resume_checkpoint()->set_dir(a->resume_dir);
  resp->mutable_heartbeat_interval()->set_seconds(5);
  resp->mutable_report_interval()->set_seconds(1);
  return grpc::Status::OK;
}

grpc::Status WorkerLinkService::Rendezvous(grpc::ServerContext* ctx, const v1::RendezvousRequest* req,
                                           v1::RendezvousResponse* resp) {
  std::optional<Supervisor::AttemptRef> a = supervisor_.AttemptOfToken(req->attempt_token());
  if (!a) return Unauthenticated();
  if (req->rank() < 0 || req->rank() >= a->world_size || req->generation() < 1 || req->barrier().empty() ||
      req->barrier().size() > 256 || req->blob().size() > (64 << 10)) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        Cat("rendezvous of rank ", req->rank(), " of ", a->world_size, ", barrier \"",
                            req->barrier().substr(0, 64), "\" generation ", req->generation(),
                            ": ranks, a generation >= 1, a name of 1-256 bytes and a blob up to 64 KiB"));
  }
  const auto key = std::make_tuple(a->campaign_id, a->attempt, req->barrier(), req->generation());
  absl::Time deadline = absl::Now() + max_rendezvous_wait_;
  // Answer a little before the caller's deadline, so that it hears who is missing instead of
  // its own timeout.
  if (ctx != nullptr) deadline = std::min(deadline, absl::FromChrono(ctx->deadline()) - absl::Milliseconds(250));
  absl::MutexLock lock(&mu_);
  Barrier& b = barriers_[key];
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
  while (!b.complete && absl::Now() < deadline && !(ctx != nullptr && ctx->IsCancelled())) {
    barrier_changed_.WaitWithDeadline(&mu_, std::min(deadline, absl::Now() + absl::Seconds(1)));
  }
  if (!b.complete) {
    std::string missing;
    for (int32_t r = 0; r < a->world_size; ++r) {
      if (!b.arrived.contains(r)) missing += Cat(missing.empty() ? "" : ", ", r);
    }
    return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                        Cat("barrier \"", req->barrier(), "\" generation ", req->generation(), ": ", b.arrived.size(),
                            " of ", a->world_size, " ranks arrived; missing ", missing));
  }
  resp->set_blob(*b.blob);
  resp->set_world_size(a->world_size);
  resp->set_generation(req->generation());
  return grpc::Status::OK;
}

grpc::Status WorkerLinkService::Heartbeat(grpc::ServerContext*, const v1::HeartbeatRequest* req,
                                          v1::HeartbeatResponse* resp) {
  std::optional<Supervisor::AttemptRef> a = supervisor_.AttemptOfToken(req->attempt_token());
  if (!a) return Unauthenticated();
  if (req->rank() >= 0 && req->rank() < a->world_size) {
    supervisor_.OnHeartbeat(a->campaign_id, a->attempt, req->rank(), req->step(), req->phase());
  }
  resp->mutable_heartbeat_interval()->set_seconds(5);
  return grpc::Status::OK;
}

grpc::Status WorkerLinkService::ReportSteps(grpc::ServerContext*, const v1::ReportStepsRequest* req,
                                            v1::ReportStepsResponse* resp) {
  std::optional<Supervisor::AttemptRef> a = supervisor_.AttemptOfToken(req->attempt_token());
  if (!a) return Unauthenticated();
  int64_t through = 0;
  for (const v1::StepMetrics& m : req->steps()) {
    if (absl::Status s = supervisor_.OnStep(a->campaign_id, a->attempt, m); !s.ok()) return ToGrpc(s);
    through = std::max(through, m.step());
    resp->set_accepted(resp->accepted() + 1);
  }
  for (const v1::EvalMetrics& m : req->evals()) {
    if (absl::Status s = supervisor_.OnEval(a->campaign_id, a->attempt, m); !s.ok()) return ToGrpc(s);
    resp->set_accepted(resp->accepted() + 1);
  }
  resp->set_stored_through_step(through);
  return grpc::Status::OK;
}

grpc::Status WorkerLinkService::ReportCheckpointShard(grpc::ServerContext*, const v1::ReportCheckpointShardRequest* req,
                                                      v1::ReportCheckpointShardResponse* resp) {
  std::optional<Supervisor::AttemptRef> a = supervisor_.AttemptOfToken(req->attempt_token());
  if (!a) return Unauthenticated();
  const v1::CheckpointShard& shard = req->shard();
  if (shard.rank() < 0 || shard.rank() >= a->world_size || shard.step() < 0) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, Cat("shard of rank ", shard.rank(), " step ", shard.step()));
  }
  resp->set_shards_expected(a->world_size);
  if (!req->error().empty()) {
    absl::Status s = supervisor_.OnSaveFailed(a->campaign_id, a->attempt, shard.step(), req->error());
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

grpc::Status WorkerLinkService::Finish(grpc::ServerContext*, const v1::FinishRequest* req, v1::FinishResponse*) {
  std::optional<Supervisor::AttemptRef> a = supervisor_.AttemptOfToken(req->attempt_token());
  if (!a) return Unauthenticated();
  v1::RankExit e;
  e.set_rank(req->rank());
  e.set_exit_kind(req->exit_kind());
  e.set_error_reason(req->error_reason());
  e.set_message(req->message());
  e.set_last_step(req->final_step());
  return ToGrpc(supervisor_.OnFinish(a->campaign_id, a->attempt, e));
}

}  // namespace belay::rpc
