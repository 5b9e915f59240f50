// Names of scheduler states, for messages.
#include "daemon/scheduler/scheduler.h"

namespace belay::sched {

std::string_view JobStateName(JobState state) {
  switch (state) {
    case JobState::kQueued: return "queued";
    case JobState::kRunning: return "running";
    case JobState::kEnded: return "ended";
    case JobState::kUnknown: return "unknown";
  }
  return "?";
}

}  // namespace belay::sched
