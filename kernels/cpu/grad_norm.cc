// CPU reference for the global gradient norm and clipping (kernels/grad_norm.h).
#include "kernels/grad_norm.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace belay::kernels::cpu {
namespace {

// Fixed block size: the blocking, and so the rounding, never depends on the thread count.
constexpr int64_t kBlock = 4096;

}  // namespace

double SumOfSquares(const float* g, int64_t n) {
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<double> partial(static_cast<size_t>(blocks));
#pragma omp parallel for
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t end = std::min(n, (blk + 1) * kBlock);
    double s = 0;
    for (int64_t i = blk * kBlock; i < end; ++i) s += static_cast<double>(g[i]) * g[i];
    partial[static_cast<size_t>(blk)] = s;
  }
  double total = 0;
  for (double s : partial) total += s;
  return total;
}

void Scale(float* g, int64_t n, float s) {
#pragma omp parallel for
  for (int64_t i = 0; i < n; ++i) g[i] *= s;
}

float ClipFactor(double norm, double max_norm) {
  if (max_norm <= 0) return 1.0f;
  const double f = max_norm / (norm + 1e-6);
  // A NaN norm gives a NaN factor (as torch's clamp does), so a broken gradient stays visible.
  if (std::isnan(f)) return NAN;
  return static_cast<float>(std::min(1.0, f));
}

}  // namespace belay::kernels::cpu
