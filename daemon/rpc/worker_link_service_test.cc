// The worker link's handlers called directly: token checks and the rendezvous barrier.
#include "daemon/rpc/worker_link_service.h"

#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <thread>

#include "common/testing/tiny_campaign.h"
#include "daemon/rpc/link_tls.h"
#include "daemon/scheduler/fake_scheduler.h"
#include "daemon/store/memory_store.h"
#include "daemon/store/records.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/security/server_credentials.h"
#include "gtest/gtest.h"
#include "worker/runtime/coordinator_client.h"

namespace belay::rpc {
namespace {

namespace fs = std::filesystem;

class WorkerLinkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("belay_link_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    supervisor::SupervisorOptions o;
    o.state_dir = dir_;
    sup_ = std::make_unique<supervisor::Supervisor>(store_, sched_, clock_, o);
    CampaignSpec tiny = testing::TinyCampaignSpec();
    tiny.campaign.name = "link";
    tiny.data.train = {"/d/*.bin"};
    tiny.train.global_batch = 3;
    tiny.resources.ranks_per_node = 3;  // three ranks meet at the barriers
    absl::StatusOr<CampaignSpec> spec = testing::ValidatedCampaignSpec(tiny);
    ASSERT_TRUE(spec.ok()) << spec.status();
    absl::StatusOr<v1::Campaign> c = sup_->Submit(*spec, "", "link.toml", 0, "root");
    ASSERT_TRUE(c.ok()) << c.status();
    id_ = c->id();
    ASSERT_TRUE(sup_->Tick().ok());
    for (const auto& [k, v] : sched_.submitted().at(0).env) {
      if (k == "BELAY_TOKEN") token_ = v;
    }
    ASSERT_FALSE(token_.empty());
  }
  void TearDown() override { fs::remove_all(dir_); }

  grpc::Status Meet(WorkerLinkService& link, int rank, const std::string& blob, int64_t generation,
                    v1::RendezvousResponse* resp, const std::string& token = "") {
    v1::RendezvousRequest req;
    req.set_attempt_token(token.empty() ? token_ : token);
    req.set_rank(rank);
    req.set_barrier("nccl-init");
    req.set_generation(generation);
    req.set_blob(blob);
    return link.Rendezvous(nullptr, &req, resp);
  }

  // Ends attempt 1 (its job exits) and lets the supervisor see it.
  void EndAttempt() {
    absl::StatusOr<std::optional<v1::Attempt>> a = store::GetAttempt(store_, id_, 1);
    ASSERT_TRUE(a.ok() && a->has_value());
    sched_.End((*a)->scheduler_job_id(), {}, 1);
    ASSERT_TRUE(sup_->Tick().ok());
    ASSERT_FALSE(sup_->IsRunning(id_, 1));
  }

  fs::path dir_;
  std::string id_;
  store::MemoryStore store_;
  sched::FakeScheduler sched_;
  FakeClock clock_;
  std::unique_ptr<supervisor::Supervisor> sup_;
  std::string token_;
};

TEST_F(WorkerLinkTest, RendezvousHandsRankZerosBlobToEveryRankOnceAllArrived) {
  WorkerLinkService link(*sup_, absl::Seconds(30));
  v1::RendezvousResponse r[3];
  grpc::Status s[3];
  std::thread t2([&] { s[2] = Meet(link, 2, "", 1, &r[2]); });
  std::thread t1([&] { s[1] = Meet(link, 1, "ignored", 1, &r[1]); });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  s[0] = Meet(link, 0, "nccl-unique-id", 1, &r[0]);
  t1.join();
  t2.join();
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(s[i].ok()) << i << ": " << s[i].error_message();
    EXPECT_EQ(r[i].blob(), "nccl-unique-id");
    EXPECT_EQ(r[i].world_size(), 3);
    EXPECT_EQ(r[i].generation(), 1);
  }
  // A rank asking again after completion gets the same answer at once.
  v1::RendezvousResponse again;
  EXPECT_TRUE(Meet(link, 1, "", 1, &again).ok());
  EXPECT_EQ(again.blob(), "nccl-unique-id");
  // Rank 0 may not change the blob of a barrier.
  EXPECT_EQ(Meet(link, 0, "another-id", 1, &again).error_code(), grpc::StatusCode::ALREADY_EXISTS);
}

// The worker's side (CoordinatorClient::Rendezvous) over a real gRPC server on a Unix socket:
// the ranks arrive at different times, rank 1 before belayd listens at all.
TEST_F(WorkerLinkTest, WorkerClientsMeetThroughARealServerAndGetRankZerosBlob) {
  WorkerLinkService link(*sup_, absl::Seconds(30));
  const std::string address = "unix:" + (dir_ / "link.sock").string();
  fs::create_directories(dir_);
  auto client = [&](int rank) {
    runtime::CoordinatorClientOptions o;
    o.address = address;
    o.token = token_;
    o.rank = rank;
    o.world_size = 3;
    return std::make_unique<runtime::CoordinatorClient>(o);
  };
  absl::StatusOr<std::string> got[3];
  std::thread early(
      [&] { got[1] = client(1)->Rendezvous("nccl", 1, "not rank 0's", std::chrono::seconds(20)); });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  grpc::ServerBuilder builder;
  builder.AddListeningPort(address, grpc::InsecureServerCredentials());
  builder.RegisterService(&link);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  std::thread late(
      [&] { got[2] = client(2)->Rendezvous("nccl", 1, "", std::chrono::seconds(20)); });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  got[0] =
      client(0)->Rendezvous("nccl", 1, std::string("id\0with\0nul", 12), std::chrono::seconds(20));
  early.join();
  late.join();
  for (int r = 0; r < 3; ++r) {
    ASSERT_TRUE(got[r].ok()) << r << ": " << got[r].status();
    EXPECT_EQ(*got[r], std::string("id\0with\0nul", 12)) << r;
  }
  // A barrier nobody else comes to: the patience runs out, naming who is missing.
  absl::StatusOr<std::string> alone =
      client(0)->Rendezvous("nccl", 2, "x", std::chrono::milliseconds(1500));
  EXPECT_EQ(alone.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_NE(alone.status().message().find("missing 1, 2"), std::string_view::npos)
      << alone.status();
  // A forged token is refused at once.
  runtime::CoordinatorClientOptions forged;
  forged.address = address;
  forged.token = "forged";
  EXPECT_EQ(runtime::CoordinatorClient(forged)
                .Rendezvous("nccl", 1, "", std::chrono::seconds(20))
                .status()
                .code(),
            absl::StatusCode::kUnauthenticated);
  server->Shutdown();
}

TEST_F(WorkerLinkTest, RendezvousTimesOutNamingTheMissingRanks) {
  WorkerLinkService link(*sup_, absl::Milliseconds(300));
  v1::RendezvousResponse r;
  grpc::Status s = Meet(link, 0, "id", 2, &r);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_NE(s.error_message().find("1 of 3 ranks arrived; missing 1, 2"), std::string::npos)
      << s.error_message();
}

TEST_F(WorkerLinkTest, CallsWithoutTheAttemptsTokenOrOutsideItAreRefused) {
  WorkerLinkService link(*sup_, absl::Milliseconds(100));
  v1::RendezvousResponse r;
  EXPECT_EQ(Meet(link, 0, "id", 1, &r, "forged").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Meet(link, 3, "id", 1, &r).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Meet(link, 0, "id", 0, &r).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  v1::HeartbeatRequest hb;
  hb.set_attempt_token("forged");
  v1::HeartbeatResponse hr;
  EXPECT_EQ(link.Heartbeat(nullptr, &hb, &hr).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  v1::RegisterRequest reg;
  reg.set_attempt_token(token_);
  reg.set_rank(5);
  reg.set_world_size(3);
  v1::RegisterResponse rr;
  EXPECT_EQ(link.Register(nullptr, &reg, &rr).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  reg.set_rank(2);
  ASSERT_TRUE(link.Register(nullptr, &reg, &rr).ok());
  EXPECT_EQ(rr.attempt_number(), 1);
}

TEST_F(WorkerLinkTest, ReportsOutsideTheAttemptAreRefusedAndStoreNothing) {
  WorkerLinkService link(*sup_, absl::Milliseconds(100));
  v1::HeartbeatRequest hb;
  hb.set_attempt_token(token_);
  hb.set_rank(3);
  v1::HeartbeatResponse hr;
  EXPECT_EQ(link.Heartbeat(nullptr, &hb, &hr).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  // Finish from ranks the attempt does not have: refused, the attempt record does not grow.
  for (int32_t rank : {3, -1, 1 << 30}) {
    v1::FinishRequest fin;
    fin.set_attempt_token(token_);
    fin.set_rank(rank);
    fin.set_message(std::string(1 << 20, 'x'));
    v1::FinishResponse fr;
    EXPECT_EQ(link.Finish(nullptr, &fin, &fr).error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << rank;
  }
  EXPECT_TRUE(store::ListRankRecords(store_, id_, 1)->empty());
  // A rank of the attempt with an enormous message: kept, cut to kMaxText.
  v1::FinishRequest fin;
  fin.set_attempt_token(token_);
  fin.set_rank(2);
  fin.set_message(std::string(1 << 20, 'x'));
  v1::FinishResponse fr;
  ASSERT_TRUE(link.Finish(nullptr, &fin, &fr).ok());
  const std::vector<v1::RankRecord> ranks = *store::ListRankRecords(store_, id_, 1);
  ASSERT_EQ(ranks.size(), 1u);
  EXPECT_LE(ranks[0].exit().message().size(), kMaxText + 3);

  // Step reports: per-rank arrays of another world size, steps out of range, negative or
  // non-finite times; one bad report refuses the whole call.
  auto steps = [&](auto mutate) {
    v1::ReportStepsRequest req;
    req.set_attempt_token(token_);
    v1::StepMetrics* good = req.add_steps();
    good->set_step(1);
    good->set_step_time_s(0.5);
    v1::StepMetrics* bad = req.add_steps();
    bad->set_step(2);
    bad->set_step_time_s(0.5);
    mutate(*bad);
    v1::ReportStepsResponse resp;
    return link.ReportSteps(nullptr, &req, &resp).error_code();
  };
  EXPECT_EQ(steps([](v1::StepMetrics& m) {
              for (int r = 0; r < 100000; ++r) m.add_rank_step_time_s(1.0);
            }),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(steps([](v1::StepMetrics& m) { m.set_step(0); }), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(steps([](v1::StepMetrics& m) { m.set_step(kMaxStep + 1); }),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(steps([](v1::StepMetrics& m) { m.set_step_time_s(-1); }),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(steps([](v1::StepMetrics& m) { m.set_tokens_per_s(std::nan("")); }),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(steps([](v1::StepMetrics& m) { m.set_tokens_seen(-5); }),
            grpc::StatusCode::INVALID_ARGUMENT);
  absl::StatusOr<std::vector<v1::StepMetrics>> stored =
      store::ListStepMetrics(store_, id_, 0, 100, 100, false);
  ASSERT_TRUE(stored.ok());
  EXPECT_TRUE(stored->empty()) << "nothing of a refused call is stored";

  // Shards from outside the attempt, or of absurd sizes and times.
  auto shard = [&](auto mutate) {
    v1::ReportCheckpointShardRequest req;
    req.set_attempt_token(token_);
    v1::CheckpointShard* s = req.mutable_shard();
    s->set_step(5);
    s->set_rank(1);
    s->set_bytes(100);
    s->set_path("/ckpt/" + id_ + "/step_000000005/rank_00001.bin");
    mutate(*s);
    v1::ReportCheckpointShardResponse resp;
    return link.ReportCheckpointShard(nullptr, &req, &resp).error_code();
  };
  EXPECT_EQ(shard([](v1::CheckpointShard& s) { s.set_rank(7); }),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(shard([](v1::CheckpointShard& s) { s.set_bytes(int64_t{1} << 62); }),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(shard([](v1::CheckpointShard& s) { s.set_blocked_time_s(-3); }),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(shard([](v1::CheckpointShard& s) { s.set_path(std::string(10000, 'p')); }),
            grpc::StatusCode::INVALID_ARGUMENT);
  // A non-finite loss is a worker's to report (belayd rolls back on it), not a malformed one.
  EXPECT_EQ(steps([](v1::StepMetrics& m) {
              m.set_loss(std::nan(""));
              for (int r = 0; r < 3; ++r) m.add_rank_step_time_s(0.5);
            }),
            grpc::StatusCode::OK);
}

TEST_F(WorkerLinkTest, RendezvousBarriersAreBoundedAndFreedWithTheirAttempt) {
  WorkerLinkService link(*sup_, absl::Milliseconds(1));
  v1::RendezvousResponse r;
  for (int64_t g = 1; g <= kMaxBarriersPerAttempt; ++g) {
    EXPECT_EQ(Meet(link, 1, "", g, &r).error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << g;
  }
  EXPECT_EQ(link.barrier_count(), static_cast<size_t>(kMaxBarriersPerAttempt));
  EXPECT_EQ(Meet(link, 1, "", kMaxBarriersPerAttempt + 1, &r).error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
  // A barrier it has already: still answered.
  EXPECT_EQ(Meet(link, 1, "", 3, &r).error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);

  EndAttempt();
  // The next attempt's first barrier finds the ended attempt's gone.
  clock_.Advance(std::chrono::hours(1));  // past the restart backoff
  ASSERT_TRUE(sup_->Tick().ok());
  std::string next_token;
  for (const auto& [k, v] : sched_.submitted().back().env) {
    if (k == "BELAY_TOKEN") next_token = v;
  }
  ASSERT_NE(next_token, token_) << "attempt 2 is started";
  EXPECT_EQ(Meet(link, 1, "", 1, &r, token_).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Meet(link, 1, "", 1, &r, next_token).error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_EQ(link.barrier_count(), 1u);
}

// The worker link over TLS with belayd's own CA: a rank given the CA registers; a plaintext
// client, and one that trusts another CA, get nowhere.
TEST_F(WorkerLinkTest, RanksReachBelaydOverTlsOnlyWithItsCa) {
  absl::StatusOr<LinkTls> tls = LoadOrCreateLinkTls(dir_ / "tls");
  ASSERT_TRUE(tls.ok()) << tls.status();
  absl::StatusOr<LinkTls> stranger = LoadOrCreateLinkTls(dir_ / "other-tls");
  ASSERT_TRUE(stranger.ok()) << stranger.status();
  WorkerLinkService link(*sup_, absl::Seconds(30));
  grpc::SslServerCredentialsOptions ssl;
  ssl.pem_key_cert_pairs.push_back({tls->key_pem, tls->cert_pem});
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::SslServerCredentials(ssl), &port);
  builder.RegisterService(&link);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  ASSERT_NE(port, 0);
  auto registers = [&](const std::string& ca, const std::string& name) {
    runtime::CoordinatorClientOptions o;
    o.address = "127.0.0.1:" + std::to_string(port);
    o.token = token_;
    o.rank = 0;
    o.world_size = 3;
    o.ca_pem = ca;
    o.tls_server_name = name;
    o.rpc_deadline = std::chrono::milliseconds(2000);
    return runtime::CoordinatorClient(o).Register(std::chrono::milliseconds(1500));
  };
  absl::Status ok = registers(tls->ca_pem, tls->server_name);
  EXPECT_TRUE(ok.ok()) << ok;
  EXPECT_FALSE(registers("", "").ok()) << "a plaintext client";
  EXPECT_FALSE(registers(stranger->ca_pem, stranger->server_name).ok())
      << "a client trusting another CA";
  EXPECT_FALSE(registers(tls->ca_pem, "not-belayd").ok()) << "a certificate for another name";
  server->Shutdown();
}

// A worker link that asks for a heartbeat every second and counts them.
class CountingLink final : public v1::WorkerLink::Service {
 public:
  grpc::Status Register(grpc::ServerContext*, const v1::RegisterRequest*,
                        v1::RegisterResponse* resp) override {
    resp->mutable_heartbeat_interval()->set_seconds(1);
    return grpc::Status::OK;
  }
  grpc::Status Heartbeat(grpc::ServerContext*, const v1::HeartbeatRequest*,
                         v1::HeartbeatResponse* resp) override {
    ++heartbeats;
    resp->mutable_heartbeat_interval()->set_seconds(1);
    return grpc::Status::OK;
  }
  std::atomic<int> heartbeats{0};
};

TEST(CoordinatorClient, HeartbeatsAtTheIntervalBelaydHandsOut) {
  CountingLink link;
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&link);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  runtime::CoordinatorClientOptions o;
  o.address = "127.0.0.1:" + std::to_string(port);
  o.token = "t";
  o.heartbeat_interval = std::chrono::milliseconds(60'000);  // belayd's answer overrides it
  {
    runtime::CoordinatorClient client(o);
    ASSERT_TRUE(client.Register(std::chrono::milliseconds(2000)).ok());
    std::this_thread::sleep_for(std::chrono::milliseconds(3500));
  }
  EXPECT_GE(link.heartbeats.load(), 3) << "one a second, not one a minute";
  server->Shutdown();
}

TEST(HeartbeatInterval, GrowsWithTheWorldSoThatAllRanksStayUnderTheRate) {
  using namespace std::chrono_literals;
  EXPECT_EQ(HeartbeatInterval(2), 5s);
  EXPECT_EQ(HeartbeatInterval(10000), 5s);
  EXPECT_EQ(HeartbeatInterval(100000), 50s);
  for (int32_t world : {1, 9999, 10001, 65536, 100000, 1 << 20}) {
    EXPECT_LE(static_cast<double>(world) / static_cast<double>(HeartbeatInterval(world).count()),
              kMaxHeartbeatsPerSecond)
        << world;
  }
}

}  // namespace
}  // namespace belay::rpc
