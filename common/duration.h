// Human durations as campaign files write them: "90s", "30m", "1h30m", "2d", or Slurm's
// "[D-]HH:MM:SS".
#pragma once

#include <chrono>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace belay {

// Parses a non-negative duration. Accepted forms:
//   - one or more <number><unit> groups, units d, h, m, s, in that order without repeats
//     ("45s", "1h30m", "2d12h");
//   - "HH:MM:SS" or "D-HH:MM:SS" (minutes and seconds below 60), as Slurm prints time limits.
// Returns InvalidArgument naming the accepted forms otherwise, or OutOfRange past 365 days.
absl::StatusOr<std::chrono::seconds> ParseDuration(std::string_view text);

// Formats in the unit form ParseDuration accepts, largest units first ("1h30m", "0s").
std::string FormatDuration(std::chrono::seconds d);

// Formats as Slurm's --time value "D-HH:MM:SS".
std::string FormatSlurmTime(std::chrono::seconds d);

}  // namespace belay
