// The worker link's handlers called directly: token checks and the rendezvous barrier.
#include "daemon/rpc/worker_link_service.h"

#include <unistd.h>

#include <filesystem>
#include <thread>

#include "daemon/scheduler/fake_scheduler.h"
#include "grpcpp/grpcpp.h"
#include "worker/runtime/coordinator_client.h"
#include "daemon/store/memory_store.h"
#include "gtest/gtest.h"

namespace belay::rpc {
namespace {

namespace fs = std::filesystem;

class WorkerLinkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("belay_link_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    supervisor::SupervisorOptions o;
    o.state_dir = dir_;
    sup_ = std::make_unique<supervisor::Supervisor>(store_, sched_, clock_, o);
    SpecParseOptions po;
    po.check_paths = false;
    SpecParseResult spec = ParseCampaignSpec(R"([campaign]
name = "link"
[model]
n_layer = 1
n_head = 1
d_model = 8
seq_len = 8
vocab_size = 257
[data]
train = "/d/*.bin"
[train]
total_steps = 10
micro_batch = 1
global_batch = 3
lr = 1e-3
[checkpoint]
dir = "/ckpt"
[resources]
ranks_per_node = 3
)",
                                             "link.toml", po);
    ASSERT_TRUE(spec.ok()) << spec.errors[0].ToString();
    ASSERT_TRUE(sup_->Submit(*spec.spec, "", "link.toml", 0, "root").ok());
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

  fs::path dir_;
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
  std::thread early([&] { got[1] = client(1)->Rendezvous("nccl", 1, "not rank 0's", std::chrono::seconds(20)); });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  grpc::ServerBuilder builder;
  builder.AddListeningPort(address, grpc::InsecureServerCredentials());
  builder.RegisterService(&link);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  std::thread late([&] { got[2] = client(2)->Rendezvous("nccl", 1, "", std::chrono::seconds(20)); });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  got[0] = client(0)->Rendezvous("nccl", 1, std::string("id\0with\0nul", 12), std::chrono::seconds(20));
  early.join();
  late.join();
  for (int r = 0; r < 3; ++r) {
    ASSERT_TRUE(got[r].ok()) << r << ": " << got[r].status();
    EXPECT_EQ(*got[r], std::string("id\0with\0nul", 12)) << r;
  }
  // A barrier nobody else comes to: the patience runs out, naming who is missing.
  absl::StatusOr<std::string> alone = client(0)->Rendezvous("nccl", 2, "x", std::chrono::milliseconds(1500));
  EXPECT_EQ(alone.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_NE(alone.status().message().find("missing 1, 2"), std::string_view::npos) << alone.status();
  // A forged token is refused at once.
  runtime::CoordinatorClientOptions forged;
  forged.address = address;
  forged.token = "forged";
  EXPECT_EQ(runtime::CoordinatorClient(forged).Rendezvous("nccl", 1, "", std::chrono::seconds(20)).status().code(),
            absl::StatusCode::kUnauthenticated);
  server->Shutdown();
}

TEST_F(WorkerLinkTest, RendezvousTimesOutNamingTheMissingRanks) {
  WorkerLinkService link(*sup_, absl::Milliseconds(300));
  v1::RendezvousResponse r;
  grpc::Status s = Meet(link, 0, "id", 2, &r);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_NE(s.error_message().find("1 of 3 ranks arrived; missing 1, 2"), std::string::npos) << s.error_message();
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

}  // namespace
}  // namespace belay::rpc
