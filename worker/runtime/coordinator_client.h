// The worker's side of the worker link: registers with belayd, then reports steps,
// evaluations, checkpoint shards and heartbeats from a background thread, and says how the
// rank leaves. belayd is never on the training path: reports are buffered and retried with
// backoff while it is unreachable, and training goes on.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "belay/v1/worker.grpc.pb.h"
#include "grpcpp/channel.h"
#include "grpcpp/support/channel_arguments.h"

namespace belay::runtime {

namespace pb = ::belay::v1;

struct CoordinatorClientOptions {
  std::string address;  // host:port of belayd's worker link
  std::string token;    // the attempt's token
  // TLS: the CA certificates (PEM) belayd's certificate must chain to; empty: plaintext (a
  // belayd started with --insecure-worker-link). `tls_server_name`: the name the certificate
  // must be issued to; empty: the host of `address`.
  std::string ca_pem;
  std::string tls_server_name;
  int rank = 0;
  int world_size = 1;
  std::chrono::milliseconds report_interval{1000};
  std::chrono::milliseconds heartbeat_interval{5000};
  std::chrono::milliseconds rpc_deadline{5000};
  size_t max_buffered = 1'000'000;  // oldest step reports dropped (and counted) beyond this
};

// A channel to belayd's worker link at `address`: TLS verified against the CA certificates
// `ca_pem`, for a certificate issued to `server_name` (empty: the host of `address`), or
// plaintext when `ca_pem` is empty (a belayd started with --insecure-worker-link). `args` go
// with it (e.g. a channel id, for a connection of its own).
std::shared_ptr<grpc::Channel> WorkerLinkChannel(
    const std::string& address, const std::string& ca_pem, const std::string& server_name,
    grpc::ChannelArguments args = grpc::ChannelArguments());

class CoordinatorClient {
 public:
  // From BELAY_COORDINATOR and BELAY_TOKEN, with TLS when BELAY_COORDINATOR_CA names the CA
  // file belayd handed the job (and BELAY_COORDINATOR_TLS_NAME the server's name); null when
  // the worker does not run under belayd, or its CA file cannot be read (logged).
  static std::unique_ptr<CoordinatorClient> FromEnvironment(int rank, int world_size);

  explicit CoordinatorClient(CoordinatorClientOptions options);
  ~CoordinatorClient();  // stops the background thread (call Finish first to flush)

  // Registers, retrying for up to `patience`; on failure training goes on and reports are
  // buffered. Starts the background thread either way.
  absl::Status Register(std::chrono::milliseconds patience);
  // What belayd answered to the last successful Register (empty before).
  const pb::RegisterResponse& registration() const { return registration_; }

  // Meets the attempt's other ranks at belayd's barrier `name`, generation `generation` (>= 1),
  // and returns the blob rank 0 brought (what rank 0 passes as `blob`; the others' is
  // ignored), e.g. the NCCL id. Asks again while belayd is unreachable or the others have not
  // all arrived, up to `patience`; DeadlineExceeded then, naming the missing ranks.
  // Callable before or after Register, from the training thread.
  absl::StatusOr<std::string> Rendezvous(const std::string& name, int64_t generation,
                                         const std::string& blob,
                                         std::chrono::milliseconds patience);

  void ReportStep(pb::StepMetrics m);
  void ReportEval(pb::EvalMetrics m);
  // This rank's shard of a checkpoint is on disk; rank 0 adds the metrics of the saved step.
  void ReportShard(pb::CheckpointShard shard,
                   std::optional<pb::StepMetrics> step_metrics = std::nullopt);
  // A save of `step` failed (training goes on; belayd records it).
  void ReportSaveFailure(int64_t step, std::string message);
  void SetPosition(int64_t step, pb::WorkerPhase phase);
  // Where the phase comes from at each heartbeat (read on the background thread; must be
  // safe to call from it). Without one, the phase given to SetPosition is sent.
  void SetPhaseSource(std::function<pb::WorkerPhase()> source);

  // Flushes what is buffered (for up to `patience`), then sends Finish.
  absl::Status Finish(pb::ExitKind kind, pb::EndReason reason, std::string message,
                      int64_t final_step, std::chrono::milliseconds patience);

  // Reports dropped because the buffer was full.
  int64_t dropped() const;

 private:
  void Loop();
  // Sends buffered reports; false when belayd could not be reached.
  bool Flush();
  std::unique_ptr<grpc::ClientContext> Context() const;

  CoordinatorClientOptions options_;
  std::unique_ptr<pb::WorkerLink::Stub> stub_;
  pb::RegisterResponse registration_;
  std::mutex send_mu_;  // one Flush at a time (the background thread, or Finish)
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<pb::StepMetrics> steps_;
  std::deque<pb::EvalMetrics> evals_;
  std::deque<pb::ReportCheckpointShardRequest> shards_;  // token filled in when sent
  int64_t step_ = 0;
  pb::WorkerPhase phase_ = pb::WORKER_PHASE_STARTUP;
  std::function<pb::WorkerPhase()> phase_source_;
  int64_t dropped_ = 0;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace belay::runtime
