// The Communicator contract (communicator_contract_test.h): exact rank-order sums, shard
// layout, in-place calls, non-blocking handles, argument errors and the bytes-sent model.
#include "worker/comm/communicator_contract_test.h"

#include <bit>
#include <cmath>
#include <limits>
#include <vector>

namespace belay::comm {

std::string ContractParamName(const ::testing::TestParamInfo<ContractParam>& info) {
  return info.param.name;
}

void PrintTo(const ContractParam& param, std::ostream* os) { *os << param.name; }

namespace {

uint64_t SplitMix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

}  // namespace

float Contribution(int rank, size_t i, uint64_t salt) {
  const uint64_t h = SplitMix64(SplitMix64(SplitMix64(salt) ^ static_cast<uint64_t>(rank)) ^ i);
  const uint32_t mantissa = static_cast<uint32_t>(h & 0x7FFFFF);
  const uint32_t exponent = static_cast<uint32_t>(127 - 10 + (h >> 23) % 21);
  const uint32_t sign = static_cast<uint32_t>((h >> 40) & 1);
  return std::bit_cast<float>(sign << 31 | exponent << 23 | mantissa);
}

float RankOrderSum(int world_size, size_t i, uint64_t salt) {
  float sum = Contribution(0, i, salt);
  for (int r = 1; r < world_size; ++r) sum += Contribution(r, i, salt);
  return sum;
}

float ReverseOrderSum(int world_size, size_t i, uint64_t salt) {
  float sum = Contribution(world_size - 1, i, salt);
  for (int r = world_size - 2; r >= 0; --r) sum += Contribution(r, i, salt);
  return sum;
}

namespace {

constexpr float kPoison = std::numeric_limits<float>::quiet_NaN();

std::vector<float> ContributionsOf(int rank, size_t n, uint64_t salt) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = Contribution(rank, i, salt);
  return v;
}

// Every element of `got` has the bits of expected(i + offset); reports the first mismatch and
// how many there are.
template <typename Expected>
void ExpectBits(std::span<const float> got, size_t offset, Expected expected,
                const std::string& what) {
  size_t mismatches = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const float want = expected(i + offset);
    if (std::bit_cast<uint32_t>(got[i]) != std::bit_cast<uint32_t>(want)) {
      if (mismatches == 0) {
        ADD_FAILURE() << what << ": element " << i << " is " << got[i] << ", want " << want
                      << " (bitwise)";
      }
      ++mismatches;
    }
  }
  EXPECT_EQ(mismatches, 0u) << what;
}

// The piece of an n-element all-reduce that rank r owns (communicator.h).
size_t PieceSize(size_t n, int rank, int world) {
  const size_t w = static_cast<size_t>(world);
  return n / w + (static_cast<size_t>(rank) < n % w ? 1 : 0);
}

TEST_P(CommunicatorContract, AllReduceSumIsTheRankOrderSumOnEveryRank) {
  const int w = comm().world_size();
  const size_t ww = static_cast<size_t>(w);
  for (size_t n : {size_t{0}, size_t{1}, size_t{2}, size_t{3}, size_t{5}, ww - 1, ww + 1,
                   size_t{1000}, size_t{4099}}) {
    std::vector<float> data = ContributionsOf(comm().rank(), n, n);
    ASSERT_TRUE(comm().AllReduceSum(data).ok());
    ExpectBits(
        data, 0, [&](size_t i) { return RankOrderSum(w, i, n); },
        "all-reduce of " + std::to_string(n));
  }
}

TEST_P(CommunicatorContract, ReduceScatterSumGivesEachRankItsShardOfTheSum) {
  const int w = comm().world_size();
  const size_t r = static_cast<size_t>(comm().rank());
  for (size_t shard_size : {size_t{0}, size_t{1}, size_t{3}, size_t{257}}) {
    const std::vector<float> input =
        ContributionsOf(comm().rank(), shard_size * static_cast<size_t>(w), shard_size);
    std::vector<float> shard(shard_size, kPoison);
    ASSERT_TRUE(comm().ReduceScatterSum(input, shard).ok());
    ExpectBits(
        shard, r * shard_size, [&](size_t i) { return RankOrderSum(w, i, shard_size); },
        "reduce-scatter of shards of " + std::to_string(shard_size));
  }
}

TEST_P(CommunicatorContract, ReduceScatterSumIntoItsOwnBlockWorksInPlace) {
  const int w = comm().world_size();
  const size_t s = 33;
  const size_t r = static_cast<size_t>(comm().rank());
  std::vector<float> buffer = ContributionsOf(comm().rank(), s * static_cast<size_t>(w), 7);
  std::span<float> own = std::span<float>(buffer).subspan(r * s, s);
  ASSERT_TRUE(comm().ReduceScatterSum(buffer, own).ok());
  ExpectBits(
      own, r * s, [&](size_t i) { return RankOrderSum(w, i, 7); }, "in-place shard");
}

TEST_P(CommunicatorContract, ReduceScatterThenAllGatherEqualsAllReduceBitwise) {
  const int w = comm().world_size();
  const size_t s = 101;
  const size_t n = s * static_cast<size_t>(w);
  std::vector<float> summed = ContributionsOf(comm().rank(), n, 11);
  std::vector<float> shard(s, kPoison);
  std::vector<float> gathered(n, kPoison);
  ASSERT_TRUE(comm().ReduceScatterSum(summed, shard).ok());
  ASSERT_TRUE(comm().AllGather(shard, gathered).ok());
  ASSERT_TRUE(comm().AllReduceSum(summed).ok());
  ExpectBits(
      gathered, 0, [&](size_t i) { return summed[i]; }, "gathered shards");
}

TEST_P(CommunicatorContract, AllGatherConcatenatesShardsInRankOrder) {
  const int w = comm().world_size();
  for (size_t s : {size_t{0}, size_t{1}, size_t{5}, size_t{300}}) {
    const std::vector<float> shard = ContributionsOf(comm().rank(), s, 100 + s);
    std::vector<float> out(s * static_cast<size_t>(w), kPoison);
    ASSERT_TRUE(comm().AllGather(shard, out).ok());
    ExpectBits(
        out, 0, [&](size_t i) { return Contribution(static_cast<int>(i / s), i % s, 100 + s); },
        "all-gather of " + std::to_string(s));
  }
}

TEST_P(CommunicatorContract, AllGatherFromItsOwnBlockWorksInPlace) {
  const int w = comm().world_size();
  const size_t s = 17;
  const size_t r = static_cast<size_t>(comm().rank());
  std::vector<float> out(s * static_cast<size_t>(w), kPoison);
  const std::vector<float> mine = ContributionsOf(comm().rank(), s, 3);
  std::copy(mine.begin(), mine.end(), out.begin() + static_cast<ptrdiff_t>(r * s));
  ASSERT_TRUE(comm().AllGather(std::span<const float>(out).subspan(r * s, s), out).ok());
  ExpectBits(
      out, 0, [&](size_t i) { return Contribution(static_cast<int>(i / s), i % s, 3); },
      "in-place all-gather");
}

TEST_P(CommunicatorContract, BroadcastCopiesTheRootsBytesToEveryRank) {
  const int w = comm().world_size();
  for (int root = 0; root < w; ++root) {
    std::vector<std::byte> data(13);
    for (size_t i = 0; i < data.size(); ++i) {
      data[i] = static_cast<std::byte>(comm().rank() * 31 + static_cast<int>(i));
    }
    ASSERT_TRUE(comm().Broadcast(data, root).ok());
    for (size_t i = 0; i < data.size(); ++i) {
      EXPECT_EQ(data[i], static_cast<std::byte>(root * 31 + static_cast<int>(i)))
          << "root " << root << " byte " << i;
    }
  }
}

TEST_P(CommunicatorContract, BarrierCompletes) { EXPECT_TRUE(comm().Barrier().ok()); }

TEST_P(CommunicatorContract, NonBlockingCollectivesCompleteOnWaitWhileOthersAreInFlight) {
  const int w = comm().world_size();
  const size_t ww = static_cast<size_t>(w);
  const size_t r = static_cast<size_t>(comm().rank());
  std::vector<float> reduced = ContributionsOf(comm().rank(), 1001, 21);
  const std::vector<float> input = ContributionsOf(comm().rank(), 64 * ww, 22);
  std::vector<float> shard(64, kPoison);
  const std::vector<float> mine = ContributionsOf(comm().rank(), 40, 23);
  std::vector<float> gathered(40 * ww, kPoison);

  std::vector<CommHandle> handles;
  handles.push_back(comm().StartAllReduceSum(reduced));
  handles.push_back(comm().StartReduceScatterSum(input, shard));
  handles.push_back(comm().StartAllGather(mine, gathered));
  // Compute that the communication could overlap with.
  double busy = 0;
  for (int i = 0; i < 100000; ++i) busy += std::sqrt(static_cast<double>(i));
  EXPECT_GT(busy, 0);
  for (CommHandle& h : handles) EXPECT_TRUE(h.Wait().ok());
  for (CommHandle& h : handles) EXPECT_FALSE(h.pending());

  ExpectBits(
      reduced, 0, [&](size_t i) { return RankOrderSum(w, i, 21); }, "overlapped all-reduce");
  ExpectBits(
      shard, r * 64, [&](size_t i) { return RankOrderSum(w, i, 22); }, "overlapped reduce-scatter");
  ExpectBits(
      gathered, 0, [&](size_t i) { return Contribution(static_cast<int>(i / 40), i % 40, 23); },
      "overlapped all-gather");
}

TEST_P(CommunicatorContract, WaitReturnsTheSameStatusAgain) {
  std::vector<float> data = ContributionsOf(comm().rank(), 10, 30);
  CommHandle handle = comm().StartAllReduceSum(data);
  EXPECT_TRUE(handle.Wait().ok());
  EXPECT_TRUE(handle.Wait().ok());
  std::vector<float> wrong(3);
  CommHandle bad = comm().StartAllGather(data, wrong);
  EXPECT_EQ(bad.Wait().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.Wait().code(), absl::StatusCode::kInvalidArgument);
}

TEST_P(CommunicatorContract, DroppedHandleCompletesBeforeItGoesAway) {
  const int w = comm().world_size();
  std::vector<float> data = ContributionsOf(comm().rank(), 500, 31);
  { CommHandle dropped = comm().StartAllReduceSum(data); }
  ExpectBits(
      data, 0, [&](size_t i) { return RankOrderSum(w, i, 31); }, "after a dropped handle");

  // Assigning over a pending handle completes it first.
  std::vector<float> first = ContributionsOf(comm().rank(), 300, 32);
  std::vector<float> second = ContributionsOf(comm().rank(), 200, 33);
  CommHandle handle = comm().StartAllReduceSum(first);
  handle = comm().StartAllReduceSum(second);
  ExpectBits(
      first, 0, [&](size_t i) { return RankOrderSum(w, i, 32); }, "replaced handle");
  EXPECT_TRUE(handle.Wait().ok());
  ExpectBits(
      second, 0, [&](size_t i) { return RankOrderSum(w, i, 33); }, "replacing handle");
}

TEST_P(CommunicatorContract, RepeatedAllReducesAreBitIdentical) {
  const std::vector<float> input = ContributionsOf(comm().rank(), 5003, 40);
  std::vector<float> first = input;
  ASSERT_TRUE(comm().AllReduceSum(first).ok());
  for (int repeat = 0; repeat < 3; ++repeat) {
    std::vector<float> again = input;
    ASSERT_TRUE(comm().AllReduceSum(again).ok());
    ExpectBits(
        again, 0, [&](size_t i) { return first[i]; }, "repeat " + std::to_string(repeat));
  }
}

TEST_P(CommunicatorContract, Int64SumsAreExact) {
  const int w = comm().world_size();
  const int64_t rank = comm().rank();
  std::vector<int64_t> data = {(rank + 1) << 40, -rank, 1, (int64_t{1} << 53) + 1 + rank};
  ASSERT_TRUE(comm().AllReduceSumInt64(data).ok());
  const int64_t ranks = w;
  const int64_t rank_sum = ranks * (ranks - 1) / 2;
  EXPECT_EQ(data, (std::vector<int64_t>{(rank_sum + ranks) << 40, -rank_sum, ranks,
                                        ranks * ((int64_t{1} << 53) + 1) + rank_sum}));
}

TEST_P(CommunicatorContract, Int64AndByteGathersConcatenateInRankOrder) {
  const int w = comm().world_size();
  const int rank = comm().rank();
  const std::vector<int64_t> mine = {rank, -int64_t{rank} * 1000000000000};
  std::vector<int64_t> all(2 * static_cast<size_t>(w), -1);
  ASSERT_TRUE(comm().AllGatherInt64(mine, all).ok());
  const std::vector<std::byte> bytes = {std::byte{0xAB}, static_cast<std::byte>(rank)};
  std::vector<std::byte> all_bytes(2 * static_cast<size_t>(w));
  ASSERT_TRUE(comm().AllGatherBytes(bytes, all_bytes).ok());
  for (int r = 0; r < w; ++r) {
    const size_t at = 2 * static_cast<size_t>(r);
    EXPECT_EQ(all[at], r);
    EXPECT_EQ(all[at + 1], -int64_t{r} * 1000000000000);
    EXPECT_EQ(all_bytes[at], std::byte{0xAB});
    EXPECT_EQ(all_bytes[at + 1], static_cast<std::byte>(r));
  }
}

TEST_P(CommunicatorContract, BytesSentFollowTheVolumeModel) {
  const int w = comm().world_size();
  const int rank = comm().rank();
  const int64_t others = w - 1;
  EXPECT_EQ(comm().bytes_sent(), CommStats{});

  std::vector<float> data(1003);
  ASSERT_TRUE(comm().AllReduceSum(data).ok());
  const int64_t p = static_cast<int64_t>(PieceSize(1003, rank, w));
  std::vector<float> shard(10);
  std::vector<float> full(10 * static_cast<size_t>(w));
  ASSERT_TRUE(comm().ReduceScatterSum(full, shard).ok());
  ASSERT_TRUE(comm().AllGather(shard, full).ok());
  std::vector<std::byte> bytes(100);
  ASSERT_TRUE(comm().Broadcast(bytes, 0).ok());
  ASSERT_TRUE(comm().Barrier().ok());
  std::vector<int64_t> counts(6);
  ASSERT_TRUE(comm().AllReduceSumInt64(counts).ok());
  const int64_t q = static_cast<int64_t>(PieceSize(6, rank, w));

  CommStats want;
  want.all_reduce = {.calls = 2, .bytes = 4 * (1003 - p + others * p) + 8 * (6 - q + others * q)};
  want.reduce_scatter = {.calls = 1, .bytes = 4 * others * 10};
  want.all_gather = {.calls = 1, .bytes = 4 * others * 10};
  want.broadcast = {.calls = 1, .bytes = rank == 0 ? 100 * others : 0};
  want.barrier = {.calls = 1, .bytes = 0};
  EXPECT_EQ(comm().bytes_sent(), want);
  EXPECT_EQ(comm().bytes_sent().total_bytes(),
            want.all_reduce.bytes + 80 * others + want.broadcast.bytes);
  if (w == 1) {
    EXPECT_EQ(comm().bytes_sent().total_bytes(), 0);
  }

  comm().ResetBytesSent();
  EXPECT_EQ(comm().bytes_sent(), CommStats{});
}

TEST_P(CommunicatorContract, ArgumentErrorsAreInvalidArgumentAndMoveNothing) {
  const int w = comm().world_size();
  const size_t ww = static_cast<size_t>(w);
  std::vector<float> full(4 * ww + 1, 1.0f);
  std::vector<float> shard(4, kPoison);
  EXPECT_EQ(comm().ReduceScatterSum(full, shard).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(comm().AllGather(shard, full).code(), absl::StatusCode::kInvalidArgument);
  // A shard that overlaps the full buffer anywhere but at this rank's block.
  std::vector<float> buffer(4 * ww + 1, 1.0f);
  std::span<float> all = std::span<float>(buffer).first(4 * ww);
  std::span<float> misplaced = std::span<float>(buffer).subspan(1, 4);
  EXPECT_EQ(comm().ReduceScatterSum(all, misplaced).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(comm().AllGather(misplaced, all).code(), absl::StatusCode::kInvalidArgument);
  std::vector<int64_t> counts(3);
  std::vector<int64_t> too_few(3 * ww - 1);
  EXPECT_EQ(comm().AllGatherInt64(counts, too_few).code(), absl::StatusCode::kInvalidArgument);
  std::vector<std::byte> bytes(3, std::byte{7});
  EXPECT_EQ(comm().Broadcast(bytes, -1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(comm().Broadcast(bytes, w).code(), absl::StatusCode::kInvalidArgument);

  EXPECT_EQ(bytes, std::vector<std::byte>(3, std::byte{7}));
  for (float f : shard) EXPECT_TRUE(std::isnan(f));
  EXPECT_EQ(buffer, std::vector<float>(4 * ww + 1, 1.0f));
  EXPECT_EQ(comm().bytes_sent(), CommStats{});
}

}  // namespace
}  // namespace belay::comm
