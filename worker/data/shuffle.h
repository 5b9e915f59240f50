// Deterministic shuffling for the data loader: a small generator and permutations that come
// out the same on every platform, compiler and standard library.
#pragma once

#include <cstdint>
#include <vector>

#include "common/rng.h"

namespace belay::data {

// splitmix64's output function: a bijective 64-bit mixer.
uint64_t Mix64(uint64_t z);

// Uniform integer in [0, bound) for bound ≥ 1, unbiased by rejection. Not
// std::uniform_int_distribution: its algorithm differs between standard libraries.
uint64_t UniformBelow(SplitMix64& rng, uint64_t bound);

// The seed of random stream `stream` of `epoch` under the campaign `seed`: a hash of all three,
// so neighbouring epochs and streams give unrelated sequences.
uint64_t DeriveSeed(uint64_t seed, uint64_t epoch, uint64_t stream);

// A uniformly random permutation of 0 .. n-1, by Fisher–Yates driven by SplitMix64(seed).
std::vector<uint32_t> RandomPermutation(uint32_t n, uint64_t seed);

}  // namespace belay::data
