// belay's mutex and condition variable: std::mutex and std::condition_variable, which
// ThreadSanitizer sees (it intercepts the pthread calls under them), with clang's
// thread-safety annotations, which libstdc++'s types lack. absl::Mutex would give the
// annotations, but Debian builds abseil without ThreadSanitizer's hooks, so a lock taken
// through it orders nothing in ThreadSanitizer's eyes and every guarded member reads as a
// race. Use these instead of absl::Mutex, absl::MutexLock and absl::CondVar; members they
// protect are declared ABSL_GUARDED_BY(mu_) as before.
#pragma once

#include <algorithm>
#include <condition_variable>
#include <mutex>

#include "absl/base/thread_annotations.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace belay {

class ABSL_LOCKABLE Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.lock(); }
  void Unlock() ABSL_UNLOCK_FUNCTION() { mu_.unlock(); }

 private:
  friend class CondVar;
  std::mutex mu_;
};

// Holds `mu` for its scope.
class ABSL_SCOPED_LOCKABLE MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) { mu_->Lock(); }
  ~MutexLock() ABSL_UNLOCK_FUNCTION() { mu_->Unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex* const mu_;
};

class CondVar {
 public:
  // Releases `mu`, waits until signalled, `deadline` passes or a spurious wake-up, and takes
  // `mu` again. Returns true if the deadline has passed. Callers loop on their condition, as
  // with any condition variable. A far deadline (absl::InfiniteFuture()) is waited for a
  // day at a time.
  bool WaitWithDeadline(Mutex* mu, absl::Time deadline) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    const absl::Duration left =
        std::clamp(deadline - absl::Now(), absl::ZeroDuration(), absl::Hours(24));
    std::unique_lock<std::mutex> held(mu->mu_, std::adopt_lock);
    cv_.wait_for(held, absl::ToChronoNanoseconds(left));
    held.release();  // still locked: the caller's lock (a MutexLock) unlocks it
    return absl::Now() >= deadline;
  }
  // Releases `mu`, waits until signalled (or a spurious wake-up), and takes `mu` again.
  void Wait(Mutex* mu) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    WaitWithDeadline(mu, absl::InfiniteFuture());
  }
  void Signal() { cv_.notify_one(); }
  void SignalAll() { cv_.notify_all(); }

 private:
  std::condition_variable cv_;
};

}  // namespace belay
