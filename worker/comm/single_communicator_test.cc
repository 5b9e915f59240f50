// SingleCommunicator against the Communicator contract, plus what is particular to one rank;
// and a check that the contract tests' data would catch a sum in another order.
#include "worker/comm/single_communicator.h"

#include <bit>
#include <vector>

#include "gtest/gtest.h"
#include "worker/comm/collective_args.h"
#include "worker/comm/communicator_contract_test.h"

namespace belay::comm {
namespace {

SingleCommunicator& TheSingleCommunicator() {
  static SingleCommunicator comm;
  return comm;
}

INSTANTIATE_TEST_SUITE_P(Single, CommunicatorContract,
                         ::testing::Values(ContractParam{
                             "Single", []() -> Communicator& { return TheSingleCommunicator(); }}),
                         ContractParamName);

TEST(SingleCommunicator, IsRankZeroOfOne) {
  SingleCommunicator comm;
  EXPECT_EQ(comm.rank(), 0);
  EXPECT_EQ(comm.world_size(), 1);
}

TEST(SingleCommunicator, CollectivesLeaveOrCopyTheValues) {
  SingleCommunicator comm;
  std::vector<float> data = {1.5f, -0.0f, 3e38f};
  ASSERT_TRUE(comm.AllReduceSum(data).ok());
  EXPECT_EQ(std::bit_cast<uint32_t>(data[1]), std::bit_cast<uint32_t>(-0.0f));
  std::vector<float> copy(3);
  ASSERT_TRUE(comm.ReduceScatterSum(data, copy).ok());
  EXPECT_EQ(copy, data);
  std::vector<float> gathered(3);
  ASSERT_TRUE(comm.AllGather(data, gathered).ok());
  EXPECT_EQ(gathered, data);
}

TEST(SingleCommunicator, RefusesToOrderAfterADeviceEvent) {
  SingleCommunicator comm;
  EXPECT_FALSE(comm.takes_device_memory());
  EXPECT_EQ(comm.OrderAfter(nullptr).code(), absl::StatusCode::kFailedPrecondition);
}

TEST(SingleCommunicator, CountsCallsButNoBytes) {
  SingleCommunicator comm;
  std::vector<float> data(100);
  ASSERT_TRUE(comm.AllReduceSum(data).ok());
  ASSERT_TRUE(comm.AllReduceSum(data).ok());
  ASSERT_TRUE(comm.Barrier().ok());
  EXPECT_EQ(comm.bytes_sent().all_reduce.calls, 2);
  EXPECT_EQ(comm.bytes_sent().barrier.calls, 1);
  EXPECT_EQ(comm.bytes_sent().total_bytes(), 0);
}

TEST(ContractData, RankOrderMattersForThreeOrMoreRanks) {
  // With two addends fp32 addition commutes; from three on, the grouping shows in the bits.
  // The contract tests compare bits, so they would catch a backend that sums in another order.
  for (int w : {3, 4}) {
    int differing = 0;
    for (size_t i = 0; i < 1000; ++i) {
      differing += std::bit_cast<uint32_t>(RankOrderSum(w, i, 1)) !=
                   std::bit_cast<uint32_t>(ReverseOrderSum(w, i, 1));
    }
    EXPECT_GT(differing, 10) << w << " ranks";
  }
}

TEST(CollectiveArgs, PiecesCoverTheBufferInRankOrderWithTheRemainderFirst) {
  // 10 elements over 4 ranks: 3, 3, 2, 2.
  const std::vector<std::pair<size_t, size_t>> want = {{0, 3}, {3, 3}, {6, 2}, {8, 2}};
  for (int r = 0; r < 4; ++r) {
    const internal::Piece p = internal::PieceOf(10, r, 4);
    EXPECT_EQ(std::make_pair(p.start, p.size), want[static_cast<size_t>(r)]) << "rank " << r;
  }
  // Fewer elements than ranks: the last ranks own nothing.
  EXPECT_EQ(internal::PieceOf(2, 3, 4).size, 0u);
  EXPECT_EQ(internal::PieceOf(2, 3, 4).start, 2u);
}

TEST(CollectiveArgs, SumInRankOrderAddsRankByRank) {
  // Three ranks' blocks of two elements; (1 + 1e8) - 1e8 is 0 in fp32, where another
  // grouping, 1 + (1e8 - 1e8), would give 1.
  const std::vector<float> contributions = {1.0f, 1.0f, 1e8f, 2.0f, -1e8f, 3.0f};
  std::vector<float> out(2);
  internal::SumInRankOrder(contributions, 3, out);
  EXPECT_EQ(out, (std::vector<float>{0.0f, 6.0f}));
}

TEST(CollectiveArgs, CountsAboveTheMpiLimitAreRejected) {
  EXPECT_TRUE(internal::CheckCount("X", internal::kMaxCount).ok());
  const absl::Status too_many = internal::CheckCount("AllReduceSum", internal::kMaxCount + 1);
  EXPECT_EQ(too_many.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(too_many.message().find("AllReduceSum"), absl::string_view::npos);
}

}  // namespace
}  // namespace belay::comm
