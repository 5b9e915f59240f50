// How the PyTorch reference tests compare belay's fp32 results with the float64 reference's.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <iostream>
#include <vector>

namespace belay::testing {

// sqrt(Σ (a_i − b_i)²) / sqrt(Σ b_i²) over i < count.
template <typename A, typename B>
double RelativeL2(A a, B b, size_t count) {
  double num = 0, den = 0;
  for (size_t i = 0; i < count; ++i) {
    const double d = a(i) - b(i);
    num += d * d;
    den += b(i) * b(i);
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

// Parameters after training: how many differ from the reference's by more than `tight` and by
// more than `loose`, and the largest difference (printed).
struct ParameterDrift {
  size_t off_tight = 0, off_loose = 0;
  double largest = 0;
};

inline ParameterDrift CompareParameters(const std::vector<float>& ours,
                                        const std::vector<double>& ref, double tight,
                                        double loose) {
  ParameterDrift drift;
  for (size_t i = 0; i < ours.size(); ++i) {
    const double d = std::abs(ours[i] - ref[i]);
    drift.largest = std::max(drift.largest, d);
    if (d > tight) ++drift.off_tight;
    if (d > loose) ++drift.off_loose;
  }
  std::cout << "parameters off by more than " << tight << ": " << drift.off_tight << " of "
            << ours.size() << "; largest difference " << drift.largest << "\n";
  return drift;
}

}  // namespace belay::testing
