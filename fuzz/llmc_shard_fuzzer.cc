// TokenShard::Open on any file: byte 0 of the input picks the vocabulary, the rest is the
// shard file. Open must refuse bad files with an error (never crash), and a shard it accepts
// must read back whole with every token inside the vocabulary.
#include <cstddef>
#include <cstdint>

#include "fuzz/fuzz_support.h"
#include "fuzz/token_shard_check.h"
#include "worker/data/shard.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return -1;  // not worth keeping in the corpus
  const int64_t vocab = belay::fuzz::VocabularyOf(data[0]);
  static const std::filesystem::path path = belay::fuzz::ScratchDir() / "train_000000.bin";
  belay::fuzz::WriteFile(path, belay::fuzz::Bytes(data + 1, size - 1));
  const absl::StatusOr<belay::data::TokenShard> shard = belay::data::TokenShard::Open(path, vocab);
  if (!shard.ok()) {
    FUZZ_CHECK(shard.status().message().find(path.string()) != std::string_view::npos,
               "the error names the file: ", shard.status().ToString());
    return 0;
  }
  belay::fuzz::CheckOpenedShard(*shard, vocab);
  return 0;
}
