// CoordinatorClient: buffered reports, a background sender, backoff while belayd is away.
#include "worker/runtime/coordinator_client.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <sstream>

#include "common/strings.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/security/credentials.h"
#include "spdlog/spdlog.h"

namespace belay::runtime {

std::unique_ptr<CoordinatorClient> CoordinatorClient::FromEnvironment(int rank, int world_size) {
  const char* address = std::getenv("BELAY_COORDINATOR");
  const char* token = std::getenv("BELAY_TOKEN");
  if (address == nullptr || token == nullptr || *address == '\0' || *token == '\0') return nullptr;
  CoordinatorClientOptions o;
  o.address = address;
  o.token = token;
  o.rank = rank;
  o.world_size = world_size;
  if (const char* ca = std::getenv("BELAY_COORDINATOR_CA"); ca != nullptr && *ca != '\0') {
    std::ifstream in(ca, std::ios::binary);
    std::stringstream pem;
    pem << in.rdbuf();
    if (!in || pem.str().empty()) {
      spdlog::error("cannot read the coordinator's CA certificate {}: training without belayd", ca);
      return nullptr;
    }
    o.ca_pem = pem.str();
    if (const char* name = std::getenv("BELAY_COORDINATOR_TLS_NAME"); name != nullptr)
      o.tls_server_name = name;
  }
  return std::make_unique<CoordinatorClient>(o);
}

namespace {

// An interval belayd hands out, if it is one to follow (1 s to 1 h).
std::optional<std::chrono::milliseconds> IntervalOf(const google::protobuf::Duration& d) {
  if (d.seconds() < 1 || d.seconds() >= 3600) return std::nullopt;
  return std::chrono::milliseconds(d.seconds() * 1000 +
                                   std::clamp(d.nanos(), 0, 999'999'999) / 1'000'000);
}

}  // namespace

std::shared_ptr<grpc::Channel> WorkerLinkChannel(const std::string& address,
                                                 const std::string& ca_pem,
                                                 const std::string& server_name,
                                                 grpc::ChannelArguments args) {
  if (ca_pem.empty())
    return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = ca_pem;
  if (!server_name.empty()) args.SetSslTargetNameOverride(server_name);
  return grpc::CreateCustomChannel(address, grpc::SslCredentials(ssl), args);
}

CoordinatorClient::CoordinatorClient(CoordinatorClientOptions options)
    : options_(std::move(options)),
      stub_(pb::WorkerLink::NewStub(
          WorkerLinkChannel(options_.address, options_.ca_pem, options_.tls_server_name))) {}

CoordinatorClient::~CoordinatorClient() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::unique_ptr<grpc::ClientContext> CoordinatorClient::Context() const {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + options_.rpc_deadline);
  return ctx;
}

absl::Status CoordinatorClient::Register(std::chrono::milliseconds patience) {
  pb::RegisterRequest req;
  req.set_attempt_token(options_.token);
  req.set_rank(options_.rank);
  req.set_world_size(options_.world_size);
  // The node as the scheduler names it (Slurm's name can differ from the host name, e.g. for
  // virtual nodes), else the host name.
  const char* slurm_node = std::getenv("SLURMD_NODENAME");
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  req.set_hostname(slurm_node != nullptr && *slurm_node != '\0' ? slurm_node : host);
  req.set_pid(static_cast<int32_t>(getpid()));
  const auto deadline = std::chrono::steady_clock::now() + patience;
  absl::Status result;
  auto wait = std::chrono::milliseconds(200);
  for (;;) {
    pb::RegisterResponse resp;
    grpc::Status s = stub_->Register(Context().get(), req, &resp);
    if (s.ok()) {
      spdlog::info("registered with belayd at {}: campaign {} attempt {}", options_.address,
                   resp.campaign_id(), resp.attempt_number());
      if (auto interval = IntervalOf(resp.heartbeat_interval()))
        options_.heartbeat_interval = *interval;
      if (auto interval = IntervalOf(resp.report_interval())) options_.report_interval = *interval;
      registration_ = std::move(resp);
      result = absl::OkStatus();
      break;
    }
    result = absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
    // A refused token will not get better by waiting.
    if (s.error_code() == grpc::StatusCode::UNAUTHENTICATED ||
        s.error_code() == grpc::StatusCode::INVALID_ARGUMENT ||
        std::chrono::steady_clock::now() + wait > deadline) {
      spdlog::warn("cannot register with belayd at {}: {}; training on, reports buffered",
                   options_.address, s.error_message());
      break;
    }
    std::this_thread::sleep_for(wait);
    wait = std::min(wait * 2, std::chrono::milliseconds(5000));
  }
  thread_ = std::thread([this] { Loop(); });
  return result;
}

absl::StatusOr<std::string> CoordinatorClient::Rendezvous(const std::string& name,
                                                          int64_t generation,
                                                          const std::string& blob,
                                                          std::chrono::milliseconds patience) {
  pb::RendezvousRequest req;
  req.set_attempt_token(options_.token);
  req.set_rank(options_.rank);
  req.set_barrier(name);
  req.set_generation(generation);
  if (options_.rank == 0) req.set_blob(blob);
  const auto deadline = std::chrono::steady_clock::now() + patience;
  auto wait = std::chrono::milliseconds(200);
  for (;;) {
    // belayd holds the call until every rank has arrived (up to its own limit): give each call
    // the rest of the patience, at most a minute.
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    grpc::ClientContext ctx;
    ctx.set_deadline(
        std::chrono::system_clock::now() +
        std::clamp(left, std::chrono::milliseconds(100), std::chrono::milliseconds(60000)));
    pb::RendezvousResponse resp;
    grpc::Status s = stub_->Rendezvous(&ctx, req, &resp);
    if (s.ok()) return std::move(*resp.mutable_blob());
    absl::Status failed(static_cast<absl::StatusCode>(s.error_code()),
                        Cat("rendezvous \"", name, "\" with belayd at ", options_.address, ": ",
                            s.error_message()));
    const bool retry = s.error_code() == grpc::StatusCode::UNAVAILABLE ||
                       s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
    // Another call must have time to be answered (belayd answers 250 ms before its deadline).
    if (!retry ||
        std::chrono::steady_clock::now() + std::max(wait, std::chrono::milliseconds(1000)) >=
            deadline) {
      return failed;
    }
    if (s.error_code() == grpc::StatusCode::UNAVAILABLE) {
      std::this_thread::sleep_for(wait);
      wait = std::min(wait * 2, std::chrono::milliseconds(5000));
    }
  }
}

void CoordinatorClient::ReportStep(pb::StepMetrics m) {
  std::lock_guard lock(mu_);
  steps_.push_back(std::move(m));
  if (steps_.size() > options_.max_buffered) {
    steps_.pop_front();
    ++dropped_;
  }
}

void CoordinatorClient::ReportEval(pb::EvalMetrics m) {
  std::lock_guard lock(mu_);
  evals_.push_back(std::move(m));
}

void CoordinatorClient::ReportShard(pb::CheckpointShard shard,
                                    std::optional<pb::StepMetrics> step_metrics) {
  {
    std::lock_guard lock(mu_);
    pb::ReportCheckpointShardRequest r;
    *r.mutable_shard() = std::move(shard);
    if (step_metrics) *r.mutable_step_metrics() = std::move(*step_metrics);
    shards_.push_back(std::move(r));
  }
  cv_.notify_all();  // checkpoint reports go out at once
}

void CoordinatorClient::ReportSaveFailure(int64_t step, std::string message) {
  {
    std::lock_guard lock(mu_);
    pb::ReportCheckpointShardRequest r;
    r.mutable_shard()->set_step(step);
    r.mutable_shard()->set_rank(options_.rank);
    r.set_error(std::move(message));
    shards_.push_back(std::move(r));
  }
  cv_.notify_all();
}

void CoordinatorClient::SetPosition(int64_t step, pb::WorkerPhase phase) {
  std::lock_guard lock(mu_);
  step_ = step;
  phase_ = phase;
}

void CoordinatorClient::SetPhaseSource(std::function<pb::WorkerPhase()> source) {
  std::lock_guard lock(mu_);
  phase_source_ = std::move(source);
}

int64_t CoordinatorClient::dropped() const {
  std::lock_guard lock(mu_);
  return dropped_;
}

namespace {
// Whether a failed call is worth repeating: belayd unreachable, slow or overloaded. Anything
// else is its verdict on the request, which a repeat would not change: logged and dropped, so
// that one refused report never holds up the ones behind it.
bool Retryable(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
    case grpc::StatusCode::ABORTED:
    case grpc::StatusCode::CANCELLED:
    case grpc::StatusCode::UNKNOWN:
    case grpc::StatusCode::INTERNAL:
      return true;
    default:
      return false;
  }
}
}  // namespace

bool CoordinatorClient::Flush() {
  std::lock_guard send(send_mu_);
  pb::ReportStepsRequest req;
  std::deque<pb::ReportCheckpointShardRequest> shards;
  {
    std::lock_guard lock(mu_);
    req.set_attempt_token(options_.token);
    req.set_rank(options_.rank);
    const size_t n = std::min<size_t>(steps_.size(), 10'000);
    for (size_t i = 0; i < n; ++i) *req.add_steps() = steps_[i];
    for (const pb::EvalMetrics& e : evals_) *req.add_evals() = e;
    shards = shards_;
  }
  if (req.steps_size() > 0 || req.evals_size() > 0) {
    pb::ReportStepsResponse resp;
    grpc::Status s = stub_->ReportSteps(Context().get(), req, &resp);
    if (!s.ok() && Retryable(s.error_code())) return false;
    if (!s.ok())
      spdlog::error("belayd refused {} step reports: {}", req.steps_size(), s.error_message());
    std::lock_guard lock(mu_);
    steps_.erase(steps_.begin(), steps_.begin() + req.steps_size());
    evals_.erase(evals_.begin(), evals_.begin() + req.evals_size());
  }
  for (pb::ReportCheckpointShardRequest& r : shards) {
    r.set_attempt_token(options_.token);
    pb::ReportCheckpointShardResponse resp;
    grpc::Status s = stub_->ReportCheckpointShard(Context().get(), r, &resp);
    if (!s.ok() && Retryable(s.error_code())) return false;
    if (!s.ok()) {
      spdlog::error("belayd refused the report of checkpoint step {}: {}", r.shard().step(),
                    s.error_message());
    } else if (!resp.accepted()) {
      spdlog::warn("checkpoint step {}: {}", r.shard().step(), resp.message());
    }
    std::lock_guard lock(mu_);
    shards_.pop_front();
  }
  return true;
}

void CoordinatorClient::Loop() {
  // Ranks that start together spread their heartbeats over the interval (by rank), rather
  // than all calling belayd in the same instant.
  const double phase = std::fmod(static_cast<double>(options_.rank) * 0.6180339887498949, 1.0);
  auto next_heartbeat = std::chrono::steady_clock::now() +
                        std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                            options_.heartbeat_interval * phase);
  auto backoff = options_.report_interval;
  for (;;) {
    {
      std::unique_lock lock(mu_);
      cv_.wait_for(lock, backoff, [this] { return stop_ || !shards_.empty(); });
      if (stop_) return;
    }
    const bool ok = Flush();
    if (std::chrono::steady_clock::now() >= next_heartbeat) {
      pb::HeartbeatRequest hb;
      {
        std::lock_guard lock(mu_);
        hb.set_attempt_token(options_.token);
        hb.set_rank(options_.rank);
        hb.set_step(step_);
        hb.set_phase(phase_source_ ? phase_source_() : phase_);
        hb.set_buffered_reports(static_cast<int32_t>(steps_.size()));
      }
      pb::HeartbeatResponse resp;
      // Best effort; missing ones are belayd's to notice. belayd may ask for another interval.
      if (stub_->Heartbeat(Context().get(), hb, &resp).ok()) {
        if (auto interval = IntervalOf(resp.heartbeat_interval()))
          options_.heartbeat_interval = *interval;
      }
      next_heartbeat = std::chrono::steady_clock::now() + options_.heartbeat_interval;
    }
    backoff =
        ok ? options_.report_interval : std::min(backoff * 2, std::chrono::milliseconds(30'000));
  }
}

absl::Status CoordinatorClient::Finish(pb::ExitKind kind, pb::EndReason reason, std::string message,
                                       int64_t final_step, std::chrono::milliseconds patience) {
  const auto deadline = std::chrono::steady_clock::now() + patience;
  // The background sender stops; what is left goes out from here.
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  for (;;) {
    bool empty;
    {
      std::lock_guard lock(mu_);
      empty = steps_.empty() && evals_.empty() && shards_.empty();
    }
    if (empty || Flush()) {
      std::lock_guard lock(mu_);
      if (steps_.empty() && evals_.empty() && shards_.empty()) break;
    }
    if (std::chrono::steady_clock::now() > deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  pb::FinishRequest req;
  req.set_attempt_token(options_.token);
  req.set_rank(options_.rank);
  req.set_final_step(final_step);
  req.set_exit_kind(kind);
  req.set_error_reason(reason);
  req.set_message(std::move(message));
  pb::FinishResponse resp;
  grpc::Status s = stub_->Finish(Context().get(), req, &resp);
  if (!s.ok()) return absl::UnavailableError(s.error_message());
  return absl::OkStatus();
}

}  // namespace belay::runtime
