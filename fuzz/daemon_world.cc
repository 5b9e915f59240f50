// The service harnesses' belayd: one campaign, running, over fakes.
#include "fuzz/daemon_world.h"

#include <algorithm>
#include <fstream>
#include <optional>
#include <system_error>
#include <utility>
#include <vector>

#include "common/campaign_spec.h"
#include "common/ckpt/layout.h"
#include "daemon/store/records.h"
#include "fuzz/fuzz_support.h"
#include "fuzz/world_spec.h"
#include "spdlog/spdlog.h"

namespace belay::fuzz {
namespace fs = std::filesystem;

DaemonWorld::DaemonWorld(fs::path dir) : dir_(std::move(dir)) {
  // belayd's log lines would only slow the search down.
  spdlog::set_level(spdlog::level::off);
  std::error_code ec;
  fs::remove_all(dir_, ec);
  fs::create_directories(dir_ / "ckpt", ec);
  // What the campaign's data glob matches, for submissions checked against the files.
  fs::create_directories(dir_ / "data", ec);
  std::ofstream(dir_ / "data" / "train_000000.bin").put('\0');
  std::ofstream(dir_ / "data" / "val_000000.bin").put('\0');
  SpecParseOptions po;
  po.check_paths = false;
  po.base_dir = dir_;
  const SpecParseResult spec = ParseCampaignSpec(kWorldSpec, "fuzz.toml", po);
  FUZZ_CHECK(spec.ok(), "the world's campaign parses: ", spec.errors[0].ToString());
  supervisor::SupervisorOptions o;
  o.state_dir = dir_;
  o.worker_program = "/usr/bin/belay-worker";
  o.coordinator_address = "127.0.0.1:1";
  o.good_after_steps = 4;
  // Shards are hashed inside the supervision round, so that an input replays the same way.
  o.verify_in_background = false;
  supervisor_ = std::make_unique<supervisor::Supervisor>(store_, scheduler_, clock_, o);
  const absl::StatusOr<v1::Campaign> c = supervisor_->Submit(
      *spec.spec, std::string(kWorldSpec), (dir_ / "fuzz.toml").string(), kOwnerUid, "fuzzer");
  FUZZ_CHECK(c.ok(), "the world's campaign is accepted: ", c.status().ToString());
  campaign_id_ = c->id();
  Tick();
  FUZZ_CHECK(!scheduler_.submitted().empty(), "the world's campaign starts");
  // A log for the coordinator's GetLogs to read.
  const fs::path attempt = dir_ / "campaigns" / campaign_id_ / "attempt_1";
  fs::create_directories(attempt, ec);
  std::ofstream(attempt / "rank_00000.log") << "step 1 loss 5.6\nstep 2 loss 5.4\n";
}

DaemonWorld::~DaemonWorld() {
  supervisor_.reset();
  std::error_code ec;
  fs::remove_all(dir_, ec);
}

std::string DaemonWorld::TokenOf(size_t submission) const {
  for (const auto& [k, v] : scheduler_.submitted().at(submission).env) {
    if (k == "BELAY_TOKEN") return v;
  }
  return "";
}

void DaemonWorld::Tick() {
  // A store write error makes the store read-only; the next calls see that, as in belayd.
  (void)supervisor_->Tick();
}

void DaemonWorld::Run(rpc::WorkerLinkService& link, const WorkerLinkCall& call) {
  const std::optional<std::string> token =
      call.token() == TOKEN_CURRENT ? std::optional(TokenOf(scheduler_.submitted().size() - 1))
      : call.token() == TOKEN_FIRST ? std::optional(TokenOf(0))
                                    : std::nullopt;
  auto with_token = [&token]<typename Req>(Req req) {
    if (token) req.set_attempt_token(*token);
    return req;
  };
  using Link = rpc::WorkerLinkService;
  switch (call.call_case()) {
    case WorkerLinkCall::kRegister:
      return Serve(link, nullptr, with_token(call.register_()), &Link::Register);
    case WorkerLinkCall::kRendezvous:
      return Serve(link, nullptr, with_token(call.rendezvous()), &Link::Rendezvous);
    case WorkerLinkCall::kHeartbeat:
      return Serve(link, nullptr, with_token(call.heartbeat()), &Link::Heartbeat);
    case WorkerLinkCall::kReportSteps:
      return Serve(link, nullptr, with_token(call.report_steps()), &Link::ReportSteps);
    case WorkerLinkCall::kReportCheckpointShard: {
      v1::ReportCheckpointShardRequest req = with_token(call.report_checkpoint_shard());
      // Only for a step and rank that have a path (the layout's functions abort on negative
      // ones; belayd refuses those before it builds a path).
      if (call.fix_shard_path() && req.shard().step() >= 0 && req.shard().rank() >= 0) {
        v1::CheckpointShard& shard = *req.mutable_shard();
        shard.set_path((ckpt::StepDir(dir_ / "ckpt", campaign_id_, shard.step()) /
                        ckpt::ShardFileName(shard.rank()))
                           .string());
      }
      return Serve(link, nullptr, req, &Link::ReportCheckpointShard);
    }
    case WorkerLinkCall::kFinish:
      return Serve(link, nullptr, with_token(call.finish()), &Link::Finish);
    case WorkerLinkCall::kTick:
      clock_.Advance(std::chrono::seconds(std::min<uint32_t>(call.tick().advance_s(), 24 * 3600)));
      Tick();
      break;
    case WorkerLinkCall::kEndJob: {
      const EndJob& e = call.end_job();
      const absl::StatusOr<std::optional<v1::Campaign>> c =
          store::GetCampaign(store_, campaign_id_);
      if (!c.ok() || !c->has_value()) break;
      const absl::StatusOr<std::optional<v1::Attempt>> a =
          store::GetAttempt(store_, campaign_id_, (*c)->current_attempt());
      if (!a.ok() || !a->has_value()) break;
      std::vector<sched::RankEnd> ranks;
      // What a real backend reports: a rank of the attempt, a signal number.
      if (e.signal() > 0 && e.signal() < 65)
        ranks.push_back({.rank = e.failed_rank() & 1, .signal = e.signal()});
      const v1::EndReason reason =
          v1::EndReason_IsValid(e.reason()) ? e.reason() : v1::END_REASON_UNSPECIFIED;
      scheduler_.End((*a)->scheduler_job_id(), std::move(ranks), e.exit_code(), reason,
                     e.message());
      Tick();
      break;
    }
    case WorkerLinkCall::CALL_NOT_SET:
      break;
  }
}

}  // namespace belay::fuzz
