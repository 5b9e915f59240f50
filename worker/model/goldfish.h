// Goldfish loss masking (as used to train Apertus): drops a deterministic ~1/k of label
// positions so that no training sequence can be memorised verbatim.
#pragma once

#include <cstdint>

namespace belay::model {

// Seed of the window hash. Fixed, so a window gets the same decision in every run, on every
// rank and after every restart.
inline constexpr uint64_t kGoldfishHashSeed = 0x676f6c6466697368ULL;  // "goldfish"

// For a sequence of T+1 tokens (inputs seq[0..T), labels seq[1..T]), writes mask[t] = 0 when
// label position t is dropped and 1 when it counts. The label at position t is seq[t+1]; its
// window is the h tokens ending at it, seq[t+2−h .. t+1], hashed as little-endian int32 with
// xxh3-64 and kGoldfishHashSeed; the position is dropped when hash < 2^64 / k. Positions with
// fewer than h tokens of window inside the sequence (t + 2 < h) always count. Returns the
// number of dropped positions.
int GoldfishMask(const int32_t* seq, int T, int64_t k, int64_t h, uint8_t* mask);

}  // namespace belay::model
