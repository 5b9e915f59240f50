// MpiCommunicator under mpirun (tests/comm/mpi_communicator_test.sh runs it on 1, 2 and 4
// ranks): the Communicator contract, the rank environment mpirun sets, MPI error conversion,
// handles outliving their communicator, and a digest of a large sum for comparing runs.
// Every rank runs the same tests in the same order; rank 0 prints gtest's report, the others
// only their failures.
#include "worker/comm/mpi_communicator.h"

#include <mpi.h>

#include <bit>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "worker/comm/communicator_contract_test.h"
#include "worker/runtime/rank_env.h"

namespace belay::comm {
namespace {

std::shared_ptr<MpiSession> session;
std::unique_ptr<MpiCommunicator> world;

INSTANTIATE_TEST_SUITE_P(Mpi, CommunicatorContract,
                         ::testing::Values(ContractParam{"Mpi",
                                                         []() -> Communicator& { return *world; }}),
                         ContractParamName);

TEST(MpiCommunicator, RankAndSizeAgreeWithTheMpirunEnvironment) {
  absl::StatusOr<runtime::RankInfo> info =
      runtime::RankInfoFromEnvironment(runtime::ProcessEnvironment());
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->source, runtime::RankSource::kMpirun);
  EXPECT_EQ(info->rank, world->rank());
  EXPECT_EQ(info->world_size, world->world_size());
  EXPECT_GE(info->local_rank, 0);
  EXPECT_LT(info->local_rank, world->world_size());
  // The script says how many ranks it asked for: W singletons would each see a world of 1.
  const char* expected = std::getenv("BELAY_COMM_TEST_WORLD_SIZE");
  ASSERT_NE(expected, nullptr) << "run by tests/comm/mpi_communicator_test.sh";
  EXPECT_EQ(world->world_size(), std::atoi(expected));
}

TEST(MpiCommunicator, MpiErrorsBecomeInternalWithMpisText) {
  EXPECT_TRUE(MpiStatus(MPI_SUCCESS, "MPI_Bcast").ok());
  const absl::Status s = MpiStatus(MPI_ERR_COUNT, "MPI_Bcast");
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(s.message().substr(0, 11), "MPI_Bcast: ");
  EXPECT_GT(s.message().size(), 11u);
}

TEST(MpiCommunicator, StartingTheSessionAgainReturnsTheLiveOne) {
  absl::StatusOr<std::shared_ptr<MpiSession>> again = MpiSession::Start();
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->get(), session.get());
}

TEST(MpiCommunicator, PendingHandleOutlivesItsCommunicator) {
  absl::StatusOr<std::unique_ptr<MpiCommunicator>> second = MpiCommunicator::Create(session);
  ASSERT_TRUE(second.ok()) << second.status();
  const int w = (*second)->world_size();
  std::vector<float> data(777);
  for (size_t i = 0; i < data.size(); ++i) data[i] = Contribution((*second)->rank(), i, 50);
  CommHandle handle = (*second)->StartAllReduceSum(data);
  second->reset();
  ASSERT_TRUE(handle.Wait().ok());
  for (size_t i = 0; i < data.size(); ++i) {
    ASSERT_EQ(std::bit_cast<uint32_t>(data[i]), std::bit_cast<uint32_t>(RankOrderSum(w, i, 50)))
        << "element " << i;
  }
}

// FNV-1a over the bits of a large all-reduce. Every rank must get the same digest; the
// script compares rank 0's (written to $BELAY_COMM_TEST_DIGEST) between two runs.
TEST(MpiCommunicator, LargeSumHasTheSameDigestOnEveryRank) {
  std::vector<float> data((1 << 18) + 3);
  for (size_t i = 0; i < data.size(); ++i) data[i] = Contribution(world->rank(), i, 60);
  ASSERT_TRUE(world->AllReduceSum(data).ok());
  uint64_t digest = 0xCBF29CE484222325ull;
  for (float f : data) {
    digest = (digest ^ std::bit_cast<uint32_t>(f)) * 0x100000001B3ull;
  }
  std::vector<int64_t> digests(static_cast<size_t>(world->world_size()));
  const std::vector<int64_t> mine = {std::bit_cast<int64_t>(digest)};
  ASSERT_TRUE(world->AllGatherInt64(mine, digests).ok());
  for (int64_t d : digests) EXPECT_EQ(d, mine[0]);
  if (const char* path = std::getenv("BELAY_COMM_TEST_DIGEST"); path && world->rank() == 0) {
    std::ofstream(path) << std::hex << digest << "\n";
  }
}

// Prints only failed assertions, prefixed with the rank (for ranks other than 0).
class FailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit FailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& result) override {
    if (result.failed()) {
      std::fprintf(stderr, "[rank %d] %s:%d: %s\n", rank_,
                   result.file_name() ? result.file_name() : "?", result.line_number(),
                   result.summary());
    }
  }

 private:
  int rank_;
};

}  // namespace
}  // namespace belay::comm

int main(int argc, char** argv) {
  using belay::comm::MpiCommunicator;
  using belay::comm::MpiSession;
  ::testing::InitGoogleTest(&argc, argv);
  absl::StatusOr<std::shared_ptr<MpiSession>> session = MpiSession::Start();
  if (!session.ok()) {
    std::fprintf(stderr, "%s\n", session.status().ToString().c_str());
    return 1;
  }
  belay::comm::session = *std::move(session);
  absl::StatusOr<std::unique_ptr<MpiCommunicator>> world =
      MpiCommunicator::Create(belay::comm::session);
  if (!world.ok()) {
    std::fprintf(stderr, "%s\n", world.status().ToString().c_str());
    return 1;
  }
  belay::comm::world = std::move(*world);
  const int rank = belay::comm::world->rank();
  if (rank != 0) {
    ::testing::TestEventListeners& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new belay::comm::FailurePrinter(rank));
  }
  const int result = RUN_ALL_TESTS();
  belay::comm::world.reset();
  belay::comm::session.reset();  // MPI_Finalize
  return result;
}
