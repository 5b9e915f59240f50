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

TEST(CondVar, AWaitEndsWhenSignalledWithTheMutexHeldAgain) {
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
    const absl::Time deadline = absl::Now() + absl::Seconds(60);
    while (!ready && absl::Now() < deadline) changed.WaitWithDeadline(&mu, deadline);
    EXPECT_TRUE(ready);
    ready = false;  // written under the lock the wait took back
  }
  setter.join();
}

TEST(CondVar, AWaitWithoutDeadlineEndsWhenSignalled) {
  Mutex mu;
  CondVar changed;
  bool ready = false;
  std::thread setter([&] {
    MutexLock lock(&mu);
    ready = true;
    changed.Signal();
  });
  {
    MutexLock lock(&mu);
    while (!ready) changed.Wait(&mu);
  }
  setter.join();
  EXPECT_TRUE(ready);
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
