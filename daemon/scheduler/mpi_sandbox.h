// The Open MPI sandbox settings of scripts/mpi-sandbox.conf, compiled into belayd: the same
// file scripts/mpi-env.sh and the Python tests read, so the settings exist once.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace belay::sched {

using EnvironmentList = std::vector<std::pair<std::string, std::string>>;

// The file's profiles: every rank on this machine (shared memory), or ranks on several nodes
// (TCP on loopback, as on deploy/local-cluster).
enum class MpiSandbox { kOneNode, kNodes };

// The variables of the file's [common] section and then of the profile's section, in file
// order (a profile's value replaces a common one of the same name). The file is checked in and
// compiled in: one that does not parse is a build defect and aborts with its line.
EnvironmentList MpiSandboxEnvironment(MpiSandbox profile);

// The parser behind it: `#` comments, blank lines, `[section]` headers and KEY=VALUE lines
// (surrounding blanks trimmed). INVALID_ARGUMENT naming the line for anything else, and
// NOT_FOUND when `profile` has no section.
absl::StatusOr<EnvironmentList> ParseMpiSandboxConf(std::string_view text,
                                                    std::string_view profile);

}  // namespace belay::sched
