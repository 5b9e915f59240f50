// TokenShard::OpenMegatron on any pair of files. Input: byte 0 picks the vocabulary, bytes
// 1-4 (little-endian) are the length L of the index; then L bytes of <prefix>.idx, and the
// rest is <prefix>.bin (an L past the end makes everything the index). Open must refuse bad
// pairs with an error (never crash), and a dataset it accepts must read back whole with every
// token inside the vocabulary.
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "fuzz/fuzz_support.h"
#include "fuzz/token_shard_check.h"
#include "worker/data/shard.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 5) return -1;  // not worth keeping in the corpus
  const int64_t vocab = belay::fuzz::VocabularyOf(data[0]);
  uint32_t idx_len;
  std::memcpy(&idx_len, data + 1, sizeof idx_len);
  const size_t rest = size - 5;
  const size_t idx_bytes = std::min<size_t>(idx_len, rest);
  static const std::filesystem::path bin = belay::fuzz::ScratchDir() / "corpus_text_document.bin";
  static const std::filesystem::path idx = belay::fuzz::ScratchDir() / "corpus_text_document.idx";
  belay::fuzz::WriteFile(idx, belay::fuzz::Bytes(data + 5, idx_bytes));
  belay::fuzz::WriteFile(bin, belay::fuzz::Bytes(data + 5 + idx_bytes, rest - idx_bytes));
  const absl::StatusOr<belay::data::TokenShard> shard =
      belay::data::TokenShard::OpenMegatron(bin, vocab);
  if (!shard.ok()) {
    FUZZ_CHECK(shard.status().message().find(bin.parent_path().string()) != std::string_view::npos,
               "the error names a file: ", shard.status().ToString());
    return 0;
  }
  belay::fuzz::CheckOpenedShard(*shard, vocab);
  return 0;
}
