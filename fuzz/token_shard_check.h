// What the two token-data harnesses (llm.c shards, Megatron datasets) share: the vocabulary
// an input's first byte picks, and the reader's promises checked on a shard Open accepted.
#pragma once

#include <cstdint>

#include "worker/data/shard.h"

namespace belay::fuzz {

// One of a few vocabulary sizes around the formats' limits, invalid ones (0, 2^31 + 1)
// included.
int64_t VocabularyOf(uint8_t selector);

// Reads every token back (Read never fails on an opened shard) and checks that each is in
// [0, vocab_size), as Open promises.
void CheckOpenedShard(const data::TokenShard& shard, int64_t vocab_size);

}  // namespace belay::fuzz
