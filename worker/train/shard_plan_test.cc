// ShardPlan: every parameter owned exactly once for any world size, slices equal, padding
// never owned, Pack/Unpack inverse of each other.
#include "worker/train/shard_plan.h"

#include <numeric>
#include <vector>

#include "gtest/gtest.h"

namespace belay::train {
namespace {

model::Gpt2Config SmallConfig() {
  model::Gpt2Config c;
  c.n_layer = 3;
  c.n_head = 2;
  c.d_model = 8;
  c.max_seq_len = 5;
  c.vocab_size = 11;
  c.padded_vocab = 128;
  return c;
}

TEST(ShardPlan, EveryParameterOwnedOnceOnAnyWorldSize) {
  model::ParameterLayout layout(SmallConfig());
  for (int W : {1, 2, 3, 4, 7, 64}) {
    SCOPED_TRACE(W);
    ShardPlan plan(layout, W);
    std::vector<int> owners(static_cast<size_t>(layout.total()), 0);
    int64_t owned_total = 0;
    for (int r = 0; r < W; ++r) {
      int64_t last_shard_end = 0;
      for (const OwnedPiece& p : plan.Owned(r)) {
        const model::TensorView& t = layout.tensors()[static_cast<size_t>(p.tensor)];
        EXPECT_GE(p.flat_offset, t.offset);
        EXPECT_LE(p.flat_offset + p.size, t.offset + t.size) << "piece straddles " << t.name;
        EXPECT_GE(p.shard_offset, last_shard_end) << "pieces out of shard order";
        EXPECT_LE(p.shard_offset + p.size, plan.shard_size());
        last_shard_end = p.shard_offset + p.size;
        for (int64_t i = 0; i < p.size; ++i) ++owners[static_cast<size_t>(p.flat_offset + i)];
        owned_total += p.size;
      }
    }
    EXPECT_EQ(owned_total, layout.total());
    for (size_t i = 0; i < owners.size(); ++i) ASSERT_EQ(owners[i], 1) << "element " << i;
    // Padding is less than one element per rank per bucket.
    EXPECT_GE(plan.padded_total(), layout.total());
    EXPECT_LT(plan.padded_total() - layout.total(),
              static_cast<int64_t>(plan.buckets().size()) * W);
  }
}

TEST(ShardPlan, BucketsFollowBackwardOrder) {
  model::ParameterLayout layout(SmallConfig());
  ShardPlan plan(layout, 2);
  ASSERT_EQ(plan.buckets().size(), 3u + 2u);  // ln_f, three layers, embeddings
  EXPECT_EQ(layout.tensors()[static_cast<size_t>(plan.buckets().front().segments[0].tensor)].name,
            "ln_f.weight");
  EXPECT_EQ(layout.tensors()[static_cast<size_t>(plan.buckets().back().segments[0].tensor)].name,
            "wte");
  // Layer buckets are layer 2, 1, 0: the first segment of each is that layer's slice of ln_1.
  const model::TensorView& ln1 = layout.at("h.ln_1.weight");
  for (int b = 1; b <= 3; ++b) {
    EXPECT_EQ(plan.buckets()[static_cast<size_t>(b)].segments[0].offset, ln1.offset + (3 - b) * 8);
  }
  int64_t offset = 0;
  for (const Bucket& b : plan.buckets()) {
    EXPECT_EQ(b.shard_offset, offset);
    EXPECT_EQ(b.padded, b.slice * 2);
    EXPECT_LT(b.padded - b.elements, 2);
    offset += b.slice;
  }
  EXPECT_EQ(offset, plan.shard_size());
}

TEST(ShardPlan, PackUnpackRoundTrip) {
  model::ParameterLayout layout(SmallConfig());
  ShardPlan plan(layout, 3);
  std::vector<float> flat(static_cast<size_t>(layout.total()));
  std::iota(flat.begin(), flat.end(), 1.0f);
  std::vector<float> back(flat.size(), -1.0f);
  for (size_t b = 0; b < plan.buckets().size(); ++b) {
    std::vector<float> packed(static_cast<size_t>(plan.buckets()[b].padded), -7.0f);
    plan.Pack(b, flat.data(), packed.data());
    for (int64_t i = plan.buckets()[b].elements; i < plan.buckets()[b].padded; ++i) {
      EXPECT_EQ(packed[static_cast<size_t>(i)], 0.0f) << "padding not zeroed";
    }
    // Each rank's pieces in this bucket sit at their place in the packed slice.
    for (int r = 0; r < 3; ++r) {
      for (const OwnedPiece& p : plan.OwnedInBucket(b, r)) {
        const int64_t at =
            r * plan.buckets()[b].slice + (p.shard_offset - plan.buckets()[b].shard_offset);
        for (int64_t i = 0; i < p.size; ++i) {
          ASSERT_EQ(packed[static_cast<size_t>(at + i)],
                    flat[static_cast<size_t>(p.flat_offset + i)]);
        }
      }
    }
    plan.Unpack(b, packed.data(), back.data());
  }
  EXPECT_EQ(back, flat);
}

}  // namespace
}  // namespace belay::train
