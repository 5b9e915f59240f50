// belay::Mutex and CondVar: exclusion, and waits that end on a signal or at the deadline.
#include "common/mutex.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

namespace belay {
namespace {

TEST(Mutex, KeepsConcurrentIncrementsApart) {
  Mutex mu;
  int64_t counter = 0;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 20000; ++i) {
        MutexLock lock(&mu);
        ++counter;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(counter, 80000);
}

// Another thread sets a flag under the lock and signals; `wait` (one wait, the lock held)
// is called in a loop until the flag is seen, and the flag is then written under the lock
// the wait took back.
template <typename WaitOnce>
void ExpectSignalEndsTheWait(WaitOnce wait) {
  Mutex mu;
  CondVar changed;
  bool ready = false;
  std::thread setter([&] {
    MutexLock lock(&mu);
    ready = true;
    changed.SignalAll();
  });
  {
    MutexLock lock(&mu);
    const absl::Time give_up = absl::Now() + absl::Seconds(60);
    while (!ready && absl::Now() < give_up) wait(changed, mu);
    EXPECT_TRUE(ready);
    ready = false;
  }
  setter.join();
}

TEST(CondVar, AWaitWithADeadlineEndsWhenSignalled) {
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  ExpectSignalEndsTheWait([&](CondVar& cv, Mutex& mu) ABSL_NO_THREAD_SAFETY_ANALYSIS {
    cv.WaitWithDeadline(&mu, deadline);
  });
}

TEST(CondVar, AWaitWithoutDeadlineEndsWhenSignalled) {
  ExpectSignalEndsTheWait([](CondVar& cv, Mutex& mu)
                              ABSL_NO_THREAD_SAFETY_ANALYSIS { cv.Wait(&mu); });
}

TEST(CondVar, AWaitWithoutASignalEndsAtItsDeadline) {
  Mutex mu;
  CondVar never;
  MutexLock lock(&mu);
  const absl::Time deadline = absl::Now() + absl::Milliseconds(50);
  bool timed_out = false;
  while (!timed_out) timed_out = never.WaitWithDeadline(&mu, deadline);
  EXPECT_GE(absl::Now(), deadline);
  // A deadline already past returns at once.
  EXPECT_TRUE(never.WaitWithDeadline(&mu, absl::Now() - absl::Seconds(1)));
}

}  // namespace
}  // namespace belay
