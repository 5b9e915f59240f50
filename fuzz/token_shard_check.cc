// Vocabulary choice and the reader's promises for the token-data harnesses.
#include "fuzz/token_shard_check.h"

#include <algorithm>
#include <array>
#include <vector>

#include "fuzz/fuzz_support.h"

namespace belay::fuzz {

int64_t VocabularyOf(uint8_t selector) {
  static constexpr std::array<int64_t, 10> kSizes = {
      257, 1, 256, 50257, 65535, 65536, 65537, int64_t{1} << 31, 0, (int64_t{1} << 31) + 1};
  return kSizes[selector % kSizes.size()];
}

void CheckOpenedShard(const data::TokenShard& shard, int64_t vocab_size) {
  FUZZ_CHECK(vocab_size >= 1 && vocab_size <= int64_t{1} << 31, "opened with vocabulary ",
             vocab_size);
  FUZZ_CHECK(shard.token_width() == 2 || shard.token_width() == 4, "token width ",
             shard.token_width());
  FUZZ_CHECK(shard.num_tokens() >= 0, "token count ", shard.num_tokens());
  std::vector<int32_t> buf(4096);
  for (int64_t first = 0; first < shard.num_tokens(); first += static_cast<int64_t>(buf.size())) {
    const int64_t n =
        std::min<int64_t>(static_cast<int64_t>(buf.size()), shard.num_tokens() - first);
    shard.Read(first, n, buf.data());
    for (int64_t i = 0; i < n; ++i) {
      FUZZ_CHECK(buf[static_cast<size_t>(i)] >= 0 && buf[static_cast<size_t>(i)] < vocab_size,
                 "token ", first + i, " is ", buf[static_cast<size_t>(i)], " in a vocabulary of ",
                 vocab_size);
    }
  }
}

}  // namespace belay::fuzz
