// Time behind an interface: belayd's decisions (backoff, hang detection, goodput) read the
// clock through it, so tests drive time by hand.
#pragma once

#include <chrono>

#include "absl/base/thread_annotations.h"
#include "common/mutex.h"

namespace belay {

using TimePoint = std::chrono::system_clock::time_point;

class Clock {
 public:
  virtual ~Clock() = default;
  virtual TimePoint Now() const = 0;
};

class SystemClock final : public Clock {
 public:
  TimePoint Now() const override { return std::chrono::system_clock::now(); }
};

// A clock that moves only when told. Thread-safe.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(TimePoint start = TimePoint(std::chrono::seconds(1'800'000'000)))
      : now_(start) {}
  TimePoint Now() const override {
    MutexLock lock(&mu_);
    return now_;
  }
  void Advance(std::chrono::system_clock::duration d) {
    MutexLock lock(&mu_);
    now_ += d;
  }

 private:
  mutable Mutex mu_;
  TimePoint now_ ABSL_GUARDED_BY(mu_);
};

}  // namespace belay
