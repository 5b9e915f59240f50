// Shared helpers for the CPU kernel tests: seeded random inputs, NaN poisoning, tolerance
// checks against double references, finite differences and thread-count runs.
#pragma once

#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace belay::kernels::cpu::testing {

inline std::vector<float> Uniform(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

inline std::vector<int32_t> Tokens(size_t n, int32_t below, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> dist(0, below - 1);
  std::vector<int32_t> v(n);
  for (int32_t& x : v) x = dist(rng);
  return v;
}

// An output buffer filled with NaN, so any element a kernel fails to write shows up.
inline std::vector<float> Poisoned(size_t n) {
  return std::vector<float>(n, std::numeric_limits<float>::quiet_NaN());
}

inline std::vector<double> ToDouble(const std::vector<float>& v) {
  return std::vector<double>(v.begin(), v.end());
}

// |got - ref| <= atol + rtol * |ref| element by element (NaN never passes); reports the first
// few offenders.
inline ::testing::AssertionResult AllClose(const std::vector<float>& got,
                                           const std::vector<double>& ref, double atol,
                                           double rtol) {
  if (got.size() != ref.size()) {
    return ::testing::AssertionFailure() << "size " << got.size() << " vs " << ref.size();
  }
  int bad = 0;
  auto failure = ::testing::AssertionFailure();
  for (size_t i = 0; i < got.size(); ++i) {
    const double diff = std::fabs(static_cast<double>(got[i]) - ref[i]);
    if (!(diff <= atol + rtol * std::fabs(ref[i]))) {
      if (bad < 5) failure << "[" << i << "] got " << got[i] << " want " << ref[i] << "; ";
      ++bad;
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return failure << bad << " of " << got.size() << " elements outside atol " << atol << " + rtol "
                 << rtol;
}

// What a kernel that accumulates (+=) `grad` into a buffer starting at `start` should hold
// after `calls` calls.
inline std::vector<double> Accumulated(const std::vector<float>& start,
                                       const std::vector<double>& grad, int calls) {
  std::vector<double> want(start.size());
  for (size_t i = 0; i < want.size(); ++i) want[i] = start[i] + calls * grad[i];
  return want;
}

inline bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Runs `f` with the OpenMP thread count set to `threads`, restoring the previous count.
template <typename F>
auto WithThreads(int threads, F f) {
  const int before = omp_get_max_threads();
  omp_set_num_threads(threads);
  auto result = f();
  omp_set_num_threads(before);
  return result;
}

// Runs `f` (returning the kernel's outputs as one std::vector<float>) with 1, 2 and 3 OpenMP
// threads; succeeds when all three give the same bits.
template <typename F>
::testing::AssertionResult SameBitsForAnyThreadCount(F f) {
  const auto one = WithThreads(1, f);
  for (int threads : {2, 3}) {
    if (!SameBits(one, WithThreads(threads, f))) {
      return ::testing::AssertionFailure() << threads << " threads give other bits than 1";
    }
  }
  return ::testing::AssertionSuccess();
}

// Central difference of `loss` in x[i] (step h), leaving x as it was.
template <typename Loss>
double CentralDifference(std::vector<float>& x, size_t i, float h, Loss loss) {
  const float saved = x[i];
  x[i] = saved + h;
  const double up = loss();
  x[i] = saved - h;
  const double down = loss();
  x[i] = saved;
  // The step actually taken, in float, over the exact difference of the perturbed values.
  return (up - down) / (static_cast<double>(saved + h) - static_cast<double>(saved - h));
}

inline double Dot(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += static_cast<double>(a[i]) * b[i];
  return s;
}

}  // namespace belay::kernels::cpu::testing
