// The worker link (proto/belay/v1/worker.proto) over the Supervisor: thin handlers that check
// the attempt token, convert, and call the supervisor.
#pragma once

#include <chrono>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>

#include "absl/base/thread_annotations.h"
#include "absl/time/time.h"
#include "belay/v1/worker.grpc.pb.h"
#include "common/mutex.h"
#include "daemon/supervisor/supervisor.h"

namespace belay::rpc {

// Every call must carry the token of an attempt belayd is running (UNAUTHENTICATED
// otherwise), and a token opens only its own attempt.
//
// Rendezvous: each (attempt, barrier name, generation) completes once, when all ranks of the
// attempt have arrived; every caller then gets rank 0's blob (the NCCL unique id). A call
// waits until then, its deadline, or `max_rendezvous_wait`, whichever comes first
// (DEADLINE_EXCEEDED naming the ranks still missing). A rank arriving again after completion
// gets the same answer at once.
//
// Checkpoints: each rank reports its shard once the worker has committed the step; when
// every rank of the attempt has reported step N, the supervisor records the checkpoint.
//
// Bounds: a token holder is not trusted further than its own attempt. Ranks outside the
// attempt's world size, steps outside 1..kMaxStep, negative or non-finite times and sizes,
// per-rank arrays not of the world size, and more than kMaxReportsPerCall reports in one call
// are INVALID_ARGUMENT (nothing of such a call is stored); free text is cut to kMaxText bytes.
// An attempt has at most kMaxBarriersPerAttempt rendezvous barriers (RESOURCE_EXHAUSTED
// beyond), and they are forgotten once the attempt has ended.
inline constexpr int64_t kMaxStep = int64_t{1} << 40;
inline constexpr int kMaxReportsPerCall = 10000;
inline constexpr size_t kMaxText = 4096;
inline constexpr int kMaxShardTensors = 1 << 20;
inline constexpr int kMaxBarriersPerAttempt = 64;

// The heartbeat interval belayd hands an attempt's ranks (RegisterResponse,
// HeartbeatResponse): 5 s, longer for large attempts so that all their ranks together send
// at most kMaxHeartbeatsPerSecond (100,000 ranks: every 50 s). Hang detection does not wait
// for heartbeats (it follows step reports); they say what each rank was doing.
inline constexpr int kMaxHeartbeatsPerSecond = 2000;
std::chrono::seconds HeartbeatInterval(int32_t world_size);

class WorkerLinkService final : public v1::WorkerLink::Service {
 public:
  explicit WorkerLinkService(supervisor::Supervisor& supervisor,
                             absl::Duration max_rendezvous_wait = absl::Minutes(10))
      : supervisor_(supervisor), max_rendezvous_wait_(max_rendezvous_wait) {}

  grpc::Status Register(grpc::ServerContext*, const v1::RegisterRequest*,
                        v1::RegisterResponse*) override;
  grpc::Status Rendezvous(grpc::ServerContext*, const v1::RendezvousRequest*,
                          v1::RendezvousResponse*) override;
  grpc::Status Heartbeat(grpc::ServerContext*, const v1::HeartbeatRequest*,
                         v1::HeartbeatResponse*) override;
  grpc::Status ReportSteps(grpc::ServerContext*, const v1::ReportStepsRequest*,
                           v1::ReportStepsResponse*) override;
  grpc::Status ReportCheckpointShard(grpc::ServerContext*, const v1::ReportCheckpointShardRequest*,
                                     v1::ReportCheckpointShardResponse*) override;
  grpc::Status Finish(grpc::ServerContext*, const v1::FinishRequest*, v1::FinishResponse*) override;

  // Rendezvous barriers held now (for tests: they are freed with their attempt).
  size_t barrier_count() const;

 private:
  struct Barrier {
    std::set<int32_t> arrived;
    std::optional<std::string> blob;  // rank 0's
    bool complete = false;
    int waiters = 0;  // calls waiting on it now
  };

  // Drops the barriers of attempts that are no longer running (none a call still waits on).
  void ForgetEndedAttempts() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  supervisor::Supervisor& supervisor_;
  const absl::Duration max_rendezvous_wait_;
  mutable Mutex mu_;
  CondVar barrier_changed_;
  std::map<std::tuple<std::string, int32_t, std::string, int64_t>, Barrier> barriers_
      ABSL_GUARDED_BY(mu_);
  std::map<std::pair<std::string, int32_t>, int> barriers_per_attempt_ ABSL_GUARDED_BY(mu_);
};

}  // namespace belay::rpc
