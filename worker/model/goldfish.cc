// Goldfish loss mask from a hash of each label's preceding window.
#include "worker/model/goldfish.h"

#include <limits>

#include "xxhash.h"

namespace belay::model {

int GoldfishMask(const int32_t* seq, int T, int64_t k, int64_t h, uint8_t* mask) {
  const uint64_t threshold = std::numeric_limits<uint64_t>::max() / static_cast<uint64_t>(k);
  int dropped = 0;
  for (int t = 0; t < T; ++t) {
    mask[t] = 1;
    if (t + 2 < h) continue;
    const int32_t* window = seq + (t + 2 - h);
    // int32 tokens are hashed in memory order: little-endian on every platform belay runs on.
    uint64_t hash =
        XXH3_64bits_withSeed(window, static_cast<size_t>(h) * sizeof(int32_t), kGoldfishHashSeed);
    if (hash < threshold) {
      mask[t] = 0;
      ++dropped;
    }
  }
  return dropped;
}

}  // namespace belay::model
