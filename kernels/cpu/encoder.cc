// CPU reference for the token + position embedding (kernels/encoder.h).
#include "kernels/encoder.h"

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

namespace belay::kernels::cpu {

void EncoderForward(float* out, const int32_t* tokens, const float* wte, const float* wpe, int B,
                    int T, int C) {
  const int64_t BT = int64_t{B} * T;
#pragma omp parallel for
  for (int64_t bt = 0; bt < BT; ++bt) {
    const float* e = wte + int64_t{tokens[bt]} * C;
    const float* p = wpe + (bt % T) * C;
    float* o = out + bt * C;
    for (int c = 0; c < C; ++c) o[c] = e[c] + p[c];
  }
}

void EncoderBackward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens, int B,
                     int T, int C) {
  const int64_t BT = int64_t{B} * T;
  // dwpe row t sums over b in order; rows are independent.
#pragma omp parallel for
  for (int t = 0; t < T; ++t) {
    float* d = dwpe + int64_t{t} * C;
    for (int b = 0; b < B; ++b) {
      const float* g = dout + (int64_t{b} * T + t) * C;
      for (int c = 0; c < C; ++c) d[c] += g[c];
    }
  }
  // dwte: positions grouped by token (a stable sort keeps each group in position order), then
  // one thread per group adds its positions in that order, so every row has one fixed sum.
  std::vector<int64_t> order(static_cast<size_t>(BT));
  std::iota(order.begin(), order.end(), int64_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [tokens](int64_t a, int64_t b) { return tokens[a] < tokens[b]; });
  std::vector<int64_t> starts;  // start of each group in `order`, plus BT at the end
  for (int64_t i = 0; i < BT; ++i) {
    if (i == 0 || tokens[order[i]] != tokens[order[i - 1]]) starts.push_back(i);
  }
  starts.push_back(BT);
  const int64_t groups = static_cast<int64_t>(starts.size()) - 1;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t g = 0; g < groups; ++g) {
    float* d = dwte + int64_t{tokens[order[starts[g]]]} * C;
    for (int64_t i = starts[g]; i < starts[g + 1]; ++i) {
      const float* src = dout + order[i] * C;
      for (int c = 0; c < C; ++c) d[c] += src[c];
    }
  }
}

}  // namespace belay::kernels::cpu
