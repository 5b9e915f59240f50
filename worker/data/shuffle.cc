// splitmix64, unbiased bounded draws and Fisher–Yates permutations.
#include "worker/data/shuffle.h"

#include <numeric>
#include <utility>

namespace belay::data {

uint64_t Mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t UniformBelow(SplitMix64& rng, uint64_t bound) {
  // Values below `threshold` (= 2^64 mod bound) would make the low residues more likely;
  // redrawing them leaves exactly floor(2^64 / bound) values per residue.
  const uint64_t threshold = (0 - bound) % bound;
  for (;;) {
    uint64_t r = rng.Next();
    if (r >= threshold) return r % bound;
  }
}

uint64_t DeriveSeed(uint64_t seed, uint64_t epoch, uint64_t stream) {
  // Distinct odd constants per input keep (seed, epoch, stream) triples that share values in
  // different positions apart.
  uint64_t h = Mix64(seed + 0x9e3779b97f4a7c15ULL);
  h = Mix64(h ^ (epoch + 0xd1b54a32d192ed03ULL));
  return Mix64(h ^ (stream + 0x8cb92ba72f3d8dd7ULL));
}

std::vector<uint32_t> RandomPermutation(uint32_t n, uint64_t seed) {
  std::vector<uint32_t> p(n);
  std::iota(p.begin(), p.end(), uint32_t{0});
  SplitMix64 rng(seed);
  for (uint32_t i = n; i > 1; --i) {
    auto j = static_cast<uint32_t>(UniformBelow(rng, i));
    std::swap(p[i - 1], p[j]);
  }
  return p;
}

}  // namespace belay::data
