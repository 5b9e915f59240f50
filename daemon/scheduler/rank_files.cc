// Rank wrapper files: see rank_files.h.
#include "daemon/scheduler/rank_files.h"

#include <cstdio>
#include <fstream>

extern char** environ;

namespace belay::sched {

std::map<std::string, std::string> InheritedEnvironment() {
  std::map<std::string, std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string_view kv(*e);
    const size_t eq = kv.find('=');
    if (eq == std::string_view::npos) continue;
    std::string key(kv.substr(0, eq));
    if (key.starts_with("SLURM_") || key.starts_with("OMPI_") || key.starts_with("PMIX_") ||
        (key.starts_with("BELAY_") && !key.starts_with("BELAY_FAULT_"))) {
      continue;
    }
    env[key] = std::string(kv.substr(eq + 1));
  }
  return env;
}

std::filesystem::path RankFile(const std::filesystem::path& log_dir, int rank, std::string_view ext) {
  char name[48];
  std::snprintf(name, sizeof name, "rank_%05d.%.*s", rank, static_cast<int>(ext.size()), ext.data());
  return log_dir / name;
}

RankEnd ReadRankEnd(const std::filesystem::path& log_dir, int rank, std::string node) {
  RankEnd e;
  e.rank = rank;
  e.node = std::move(node);
  std::ifstream in(RankFile(log_dir, rank, "exit"));
  int code = 0;
  if (in >> code) {
    if (code > 128 && code < 128 + 65) {
      e.signal = code - 128;
    } else {
      e.exit_code = code;
    }
  }
  return e;
}

}  // namespace belay::sched
