// A backward hook for model tests: every gradient group gets a zeroed staging buffer of its
// own, as ZeRO stage 2 gives it, and the calls are recorded, so that a test can check that
// Backward through the hook equals the flat Backward and follows BackwardHook's protocol.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "worker/model/backward_hook.h"
#include "worker/model/params.h"

namespace belay::model::testing {

class StagingHook final : public BackwardHook {
 public:
  // `groups`: the architecture's gradient groups; `total`: elements of its parameters.
  StagingHook(std::vector<std::vector<Segment>> groups, int64_t total)
      : groups_(std::move(groups)), total_(total) {
    for (const auto& g : groups_) {
      int64_t n = 0;
      for (const Segment& s : g) n += s.size;
      buffers_.emplace_back(static_cast<size_t>(n), 0.0f);
    }
  }

  absl::Status Acquire(int group, std::span<float*> into) override {
    calls_.push_back(group + 1);
    PointAtPacked(groups_[static_cast<size_t>(group)], buffers_[static_cast<size_t>(group)].data(),
                  into);
    return absl::OkStatus();
  }
  absl::Status Release(int group) override {
    calls_.push_back(-(group + 1));
    return absl::OkStatus();
  }

  // The staged gradients, laid out like the parameters (-1 where no group wrote).
  std::vector<float> Gathered() const {
    std::vector<float> flat(static_cast<size_t>(total_), -1.0f);
    for (size_t g = 0; g < groups_.size(); ++g) {
      const float* at = buffers_[g].data();
      for (const Segment& s : groups_[g]) {
        std::copy(at, at + s.size, flat.begin() + s.offset);
        at += s.size;
      }
    }
    return flat;
  }
  // +g+1 for Acquire(g), -(g+1) for Release(g), in call order.
  const std::vector<int>& calls() const { return calls_; }

  // The calls of one pass over L layers: Acquire(L+1); then each group g = 0 … L acquired
  // and released in turn; Release(L+1) last.
  static std::vector<int> ExpectedCalls(int L) {
    std::vector<int> expected = {L + 2};
    for (int g = 0; g <= L; ++g) {
      expected.push_back(g + 1);
      expected.push_back(-(g + 1));
    }
    expected.push_back(-(L + 2));
    return expected;
  }

 private:
  std::vector<std::vector<Segment>> groups_;
  int64_t total_;
  std::vector<std::vector<float>> buffers_;
  std::vector<int> calls_;
};

}  // namespace belay::model::testing
