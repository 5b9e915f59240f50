// ManifestFromJson on any text: it must refuse what is not a valid manifest with DataLoss
// (never crash or throw), and a manifest it accepts must survive ManifestToJson and a second
// parse unchanged, with a shard map that covers each tensor exactly once.
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/ckpt/manifest.h"
#include "fuzz/fuzz_support.h"

namespace {

using belay::ckpt::Manifest;
using belay::ckpt::ShardMap;
using belay::ckpt::ShardRange;

void CheckShardMap(const ShardMap& map, int world_size) {
  for (const auto& [name, total] : map.totals) {
    uint64_t covered = 0;
    for (const ShardRange& part : map.Find(name, 0, total)) {
      FUZZ_CHECK(part.offset == covered && part.rank >= 0 && part.rank < world_size, name, " at ",
                 covered);
      covered += part.count;
    }
    FUZZ_CHECK(covered == total || total == 0, name, ": ", covered, " of ", total,
               " elements found");
  }
  uint64_t listed = 0;
  for (int rank = 0; rank < world_size && rank < 64; ++rank) listed += map.OfRank(rank).size();
  if (world_size <= 64) {
    uint64_t ranges = 0;
    for (const auto& [name, list] : map.ranges) ranges += list.size();
    FUZZ_CHECK(listed == ranges, "OfRank lists ", listed, " of ", ranges, " ranges");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::StatusOr<Manifest> m =
      belay::ckpt::ManifestFromJson(belay::fuzz::Text(data, size), "fuzz/manifest.json");
  if (!m.ok()) {
    FUZZ_CHECK(m.status().code() == absl::StatusCode::kDataLoss, m.status().ToString());
    return 0;
  }
  FUZZ_CHECK(m->world_size >= 1 && static_cast<int>(m->shards.size()) == m->world_size,
             "one shard per rank");
  if (m->shard_map) CheckShardMap(*m->shard_map, m->world_size);
  const std::string text = belay::ckpt::ManifestToJson(*m);
  const absl::StatusOr<Manifest> again = belay::ckpt::ManifestFromJson(text, "formatted.json");
  FUZZ_CHECK(again.ok(), "the written manifest reads back: ", again.status().ToString(), "\n",
             text);
  FUZZ_CHECK(belay::ckpt::ManifestToJson(*again) == text, "the manifest reads back the same:\n",
             text);
  return 0;
}
