// Logging set-up shared by belayd, belay-worker and the CLI: spdlog to stderr.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace belay {

// Installs a stderr logger named `program` as spdlog's default. `level` is one of trace,
// debug, info, warn, error, critical, off; anything else is InvalidArgument.
absl::Status InitLogging(std::string_view program, std::string_view level);

// "belay 0.1.0 (rev abc1234, CUDA on)".
std::string VersionLine(std::string_view program);

}  // namespace belay
