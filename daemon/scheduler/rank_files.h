// What every backend runs around a rank, and reads back when the job has ended: the rank
// wrapper writes the rank's output to <log_dir>/rank_<r>.log and, when the rank ends, its exit
// status to rank_<r>.exit (atomically). The log directory is on a filesystem belayd can read
// (local, or shared with the compute nodes).
#pragma once

#include <sys/stat.h>

#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "daemon/scheduler/scheduler.h"

namespace belay::sched {

// A /bin/sh script: `/bin/sh -c kRankWrapper belay-rank PROGRAM ARGS...`. The rank is
// OMPI_COMM_WORLD_RANK under mpirun, else SLURM_PROCID under srun, else 0; BELAY_LOG_DIR
// names the log directory. The traps
// keep the wrapper alive when the job is signalled (the rank gets the signal too and
// decides); trapped signals are reset to their defaults in the rank. Once the rank has ended
// the signals are ignored, so that a late one (mpirun forwards them to each rank's process
// group) cannot kill the wrapper's `mv` before the exit status is in place.
inline constexpr const char* kRankWrapper =
    "trap : USR1 USR2 TERM INT HUP\n"
    "r=${OMPI_COMM_WORLD_RANK:-${SLURM_PROCID:-0}}\n"
    "f=$(printf '%s/rank_%05d' \"$BELAY_LOG_DIR\" \"$r\")\n"
    "\"$@\" >\"$f.log\" 2>&1 </dev/null\n"
    "s=$?\n"
    "trap '' USR1 USR2 TERM INT HUP\n"
    "echo \"$s\" >\"$f.exit.tmp\" && mv \"$f.exit.tmp\" \"$f.exit\"\n"
    "exit \"$s\"\n";

// <log_dir>/rank_<r, 5 digits>.<ext>
std::filesystem::path RankFile(const std::filesystem::path& log_dir, int rank,
                               std::string_view ext);

// A file ranks wrote, opened for reading by belayd: only a regular file, not through a
// symlink, and without blocking (a FIFO is refused, not waited on). The log directory may
// belong to the campaign's owner (ranks running as that user), who must not make belayd read
// other files or hang. Returns the descriptor (the caller closes it) and fills *st; -1 with
// errno set otherwise.
int OpenRankFile(const std::filesystem::path& path, struct stat* st);

// How rank `rank` ended, from its exit file: an exit code, or the signal that killed it (a
// status of 128 + n); neither when there is no exit file (the rank never ran, or died with
// its wrapper).
RankEnd ReadRankEnd(const std::filesystem::path& log_dir, int rank, std::string node);

// What a job inherits of belayd's own environment: all of it except the rank and scheduler
// variables a belayd started from a job or a shell would carry (SLURM_*, OMPI_*, PMIX_*,
// BELAY_* but for the BELAY_FAULT_* test switches). The job's own variables go on top.
std::map<std::string, std::string> InheritedEnvironment();

// Whether belayd passes its own variable `key` to a job running as another user: only PATH,
// LANG, LANGUAGE, LC_* and TZ. Everything else of belayd's environment (its session's
// XDG_*, SSH_*, SUDO_*, credentials such as KRB5CCNAME, library paths, whatever an operator's
// shell held) is belayd's own user's business.
bool PassedToOtherUsers(std::string_view key);

// An inherited environment made that of user `as` (a job running as a campaign's owner): the
// variables PassedToOtherUsers allows, plus HOME, USER and LOGNAME of the owner. What belay
// itself sets for the job (MPI transport settings, --slurm-job-env items, the BELAY_ variables
// of the attempt) goes on top.
void MakeEnvironmentOf(const RunAs& as, std::map<std::string, std::string>& env);

}  // namespace belay::sched
