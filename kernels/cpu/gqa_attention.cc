// CPU reference for causal GQA self-attention with a document mask (kernels/gqa_attention.h).
#include "kernels/gqa_attention.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace belay::kernels::cpu {
namespace {

// A shape whose key/value heads do not divide the query heads is a caller's bug: stop.
void CheckShape(const GqaShape& s) {
  if (s.NKV <= 0 || s.NH % s.NKV != 0 || s.hs <= 0) {
    std::fprintf(stderr, "GQA attention: NH %d, NKV %d, hs %d (NKV must divide NH)\n", s.NH, s.NKV,
                 s.hs);
    std::abort();
  }
}

}  // namespace

void GqaAttentionForward(float* out, float* att, const float* qkv, const int32_t* doc,
                         const GqaShape& s) {
  CheckShape(s);
  const int T = s.T, hs = s.hs;
  const int64_t W = s.QkvWidth();
  const int64_t koff = int64_t{s.NH} * hs;  // first key head in a token's row
  const int64_t voff = koff + int64_t{s.NKV} * hs;
  const int group = s.NH / s.NKV;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  const int64_t rows = int64_t{s.B} * s.NH * T;  // one (b, h, t) query row per iteration
#pragma omp parallel for
  for (int64_t r = 0; r < rows; ++r) {
    const int t = static_cast<int>(r % T);
    const int h = static_cast<int>((r / T) % s.NH);
    const int64_t b = r / (int64_t{s.NH} * T);
    const int64_t g = h / group;
    const float* base = qkv + b * T * W;
    const int32_t* d = doc == nullptr ? nullptr : doc + b * T;
    auto visible = [d, t](int t2) { return d == nullptr || d[t2] == d[t]; };
    const float* q = base + t * W + int64_t{h} * hs;
    float* a = att + r * T;

    float maxv = -INFINITY;
    for (int t2 = 0; t2 <= t; ++t2) {
      if (!visible(t2)) continue;
      const float* k = base + t2 * W + koff + g * hs;
      float dot = 0;
      for (int i = 0; i < hs; ++i) dot += q[i] * k[i];
      a[t2] = dot * scale;
      if (a[t2] > maxv) maxv = a[t2];
    }
    float sum = 0;
    for (int t2 = 0; t2 <= t; ++t2) {
      a[t2] = visible(t2) ? std::exp(a[t2] - maxv) : 0.0f;
      sum += a[t2];
    }
    const float inv = 1.0f / sum;  // sum >= 1: a query always sees itself
    for (int t2 = 0; t2 <= t; ++t2) a[t2] *= inv;
    for (int t2 = t + 1; t2 < T; ++t2) a[t2] = 0;

    float* o = out + (b * T + t) * (int64_t{s.NH} * hs) + int64_t{h} * hs;
    for (int i = 0; i < hs; ++i) o[i] = 0;
    for (int t2 = 0; t2 <= t; ++t2) {
      if (a[t2] == 0) continue;
      const float* v = base + t2 * W + voff + g * hs;
      for (int i = 0; i < hs; ++i) o[i] += a[t2] * v[i];
    }
  }
}

void GqaAttentionBackward(float* dqkv, const float* dout, const float* qkv, const float* att,
                          const GqaShape& s) {
  CheckShape(s);
  const int T = s.T, hs = s.hs;
  const int64_t W = s.QkvWidth();
  const int64_t koff = int64_t{s.NH} * hs;
  const int64_t voff = koff + int64_t{s.NKV} * hs;
  const int group = s.NH / s.NKV;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  const int64_t tasks = int64_t{s.B} * s.NKV;
#pragma omp parallel
  {
    std::vector<float> datt(static_cast<size_t>(T));  // dLoss/d att[t, :], then d preatt
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t b = task / s.NKV;
      const int64_t g = task % s.NKV;
      const float* base = qkv + b * T * W;
      float* dbase = dqkv + b * T * W;
      for (int64_t h = g * group; h < (g + 1) * group; ++h) {
        for (int t = 0; t < T; ++t) {
          const float* a = att + ((b * s.NH + h) * T + t) * T;
          const float* go = dout + (b * T + t) * (int64_t{s.NH} * hs) + h * hs;
          for (int t2 = 0; t2 <= t; ++t2) {
            datt[static_cast<size_t>(t2)] = 0;
            if (a[t2] == 0) continue;  // masked, or a weight that underflowed: no gradient
            const float* v = base + t2 * W + voff + g * hs;
            float* dv = dbase + t2 * W + voff + g * hs;
            float dot = 0;
            for (int i = 0; i < hs; ++i) {
              dot += go[i] * v[i];
              dv[i] += a[t2] * go[i];
            }
            datt[static_cast<size_t>(t2)] = dot;
          }
          // Softmax backward: dpre = a * (datt - sum(a * datt)).
          float adot = 0;
          for (int t2 = 0; t2 <= t; ++t2) adot += a[t2] * datt[static_cast<size_t>(t2)];
          const float* q = base + t * W + h * hs;
          float* dq = dbase + t * W + h * hs;
          for (int t2 = 0; t2 <= t; ++t2) {
            if (a[t2] == 0) continue;
            const float dpre = a[t2] * (datt[static_cast<size_t>(t2)] - adot) * scale;
            const float* k = base + t2 * W + koff + g * hs;
            float* dk = dbase + t2 * W + koff + g * hs;
            for (int i = 0; i < hs; ++i) {
              dq[i] += dpre * k[i];
              dk[i] += dpre * q[i];
            }
          }
        }
      }
    }
  }
}

void DocumentIdsAndPositions(int32_t* doc, int32_t* pos, const int32_t* tokens, int B, int T,
                             int32_t eod) {
  for (int64_t b = 0; b < B; ++b) {
    int32_t id = 0, p = 0;
    for (int64_t t = 0; t < T; ++t) {
      const int64_t i = b * T + t;
      doc[i] = id;
      pos[i] = p++;
      if (tokens[i] == eod) {
        ++id;
        p = 0;
      }
    }
  }
}

}  // namespace belay::kernels::cpu
