// link_bench's servers: belayd's worker link with its supervisor and store, and the baseline.
#include "bench/link_bench_server.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <iostream>
#include <thread>

#include "belay/v1/worker.grpc.pb.h"
#include "common/campaign_spec.h"
#include "common/clock.h"
#include "common/testing/tiny_campaign.h"
#include "daemon/rpc/link_tls.h"
#include "daemon/rpc/worker_link_service.h"
#include "daemon/scheduler/fake_scheduler.h"
#include "daemon/store/rocksdb_store.h"
#include "daemon/supervisor/supervisor.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/security/server_credentials.h"

namespace belay::bench {
namespace {

namespace fs = std::filesystem;
namespace v1 = ::belay::v1;

std::atomic<bool> stop{false};

void OnSignal(int) { stop = true; }

// The worker link's TLS, as belayd makes it in its state directory.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> Credentials(const fs::path& dir) {
  absl::StatusOr<rpc::LinkTls> tls = rpc::LoadOrCreateLinkTls(dir / "state" / "tls");
  if (!tls.ok()) return tls.status();
  grpc::SslServerCredentialsOptions ssl;
  ssl.pem_key_cert_pairs.push_back({tls->key_pem, tls->cert_pem});
  return grpc::SslServerCredentials(ssl);
}

// Listens on a free loopback port; writes "127.0.0.1:<port>" to `address_file`.
std::unique_ptr<grpc::Server> Listen(grpc::Service& service,
                                     std::shared_ptr<grpc::ServerCredentials> creds,
                                     const fs::path& address_file) {
  grpc::ServerBuilder b;
  int port = 0;
  b.AddListeningPort("127.0.0.1:0", std::move(creds), &port);
  b.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = b.BuildAndStart();
  if (server != nullptr) std::ofstream(address_file) << "127.0.0.1:" << port << "\n";
  return server;
}

void WaitForSignal() {
  signal(SIGTERM, OnSignal);
  signal(SIGINT, OnSignal);
  while (!stop) std::this_thread::sleep_for(std::chrono::milliseconds(100));
}

class EmptyLink final : public v1::WorkerLink::Service {
 public:
  explicit EmptyLink(int32_t ranks) : interval_(rpc::HeartbeatInterval(ranks).count()) {}
  grpc::Status Register(grpc::ServerContext*, const v1::RegisterRequest*,
                        v1::RegisterResponse* resp) override {
    resp->mutable_heartbeat_interval()->set_seconds(interval_);
    return grpc::Status::OK;
  }
  grpc::Status Heartbeat(grpc::ServerContext*, const v1::HeartbeatRequest*,
                         v1::HeartbeatResponse* resp) override {
    resp->mutable_heartbeat_interval()->set_seconds(interval_);
    return grpc::Status::OK;
  }
  grpc::Status ReportSteps(grpc::ServerContext*, const v1::ReportStepsRequest* req,
                           v1::ReportStepsResponse* resp) override {
    resp->set_accepted(req->steps_size());
    return grpc::Status::OK;
  }

 private:
  int64_t interval_;
};

// A campaign of `ranks` ranks: Slurm-shaped (4 ranks a node), since a local campaign has at
// most 1024 ranks; the fake scheduler runs its job.
CampaignSpec BenchCampaign(int32_t ranks) {
  CampaignSpec s = testing::TinyCampaignSpec();
  s.campaign.name = "bench";
  s.data.train = {"/nonexistent/train_*.bin"};
  s.checkpoint.dir = "/nonexistent/ckpt";
  s.checkpoint.every_steps = 100000;
  s.resources.scheduler = SchedulerKind::kSlurm;
  s.resources.ranks_per_node = 4;
  s.resources.nodes = ranks / 4;
  s.train.total_steps = 1000000000;
  s.train.global_batch = ranks / 4 * 4;
  return s;
}

}  // namespace

int ServeBelayd(const fs::path& dir, int32_t ranks) {
  absl::StatusOr<CampaignSpec> spec = testing::ValidatedCampaignSpec(BenchCampaign(ranks));
  if (!spec.ok()) {
    std::cerr << "link_bench: " << spec.status() << "\n";
    return 1;
  }
  const std::string toml = FormatCampaignSpec(*spec);
  absl::StatusOr<std::unique_ptr<store::RocksDbStore>> st =
      store::RocksDbStore::Open(dir / "state" / "store");
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> creds = Credentials(dir);
  if (!st.ok() || !creds.ok()) {
    std::cerr << "link_bench: " << (!st.ok() ? st.status() : creds.status()) << "\n";
    return 1;
  }
  sched::FakeScheduler scheduler;
  SystemClock clock;
  supervisor::SupervisorOptions o;
  o.state_dir = dir / "state";
  supervisor::Supervisor sup(**st, scheduler, clock, o);
  absl::StatusOr<v1::Campaign> c =
      sup.Submit(*spec, toml, (dir / "bench.toml").string(), ::getuid(), "bench");
  if (!c.ok() || !sup.Tick().ok() || scheduler.submitted().empty()) {
    std::cerr << "link_bench: the campaign did not start: " << c.status() << "\n";
    return 1;
  }
  for (const auto& [k, v] : scheduler.submitted().back().env) {
    if (k == "BELAY_TOKEN") std::ofstream(dir / "token") << v << "\n";
  }
  std::ofstream(dir / "campaign") << c->id() << "\n";
  rpc::WorkerLinkService link(sup);
  std::unique_ptr<grpc::Server> server = Listen(link, *creds, dir / "address");
  if (server == nullptr) return 1;
  std::thread rounds([&] {
    while (!stop) {
      if (absl::Status s = sup.Tick(); !s.ok())
        std::cerr << "link_bench: supervision round: " << s << "\n";
      std::this_thread::sleep_for(std::chrono::seconds(1));
    }
  });
  WaitForSignal();
  rounds.join();
  server->Shutdown();
  return 0;
}

int ServeBaseline(const fs::path& dir, int32_t ranks) {
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> creds = Credentials(dir);
  if (!creds.ok()) {
    std::cerr << "link_bench: " << creds.status() << "\n";
    return 1;
  }
  EmptyLink link(ranks);
  std::unique_ptr<grpc::Server> server = Listen(link, *creds, dir / "baseline_address");
  if (server == nullptr) return 1;
  WaitForSignal();
  server->Shutdown();
  return 0;
}

}  // namespace belay::bench
