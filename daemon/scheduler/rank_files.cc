// Rank wrapper files: see rank_files.h.
#include "daemon/scheduler/rank_files.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <string>

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

bool PassedToOtherUsers(std::string_view key) {
  return key == "PATH" || key == "LANG" || key == "LANGUAGE" || key.starts_with("LC_") ||
         key == "TZ";
}

void MakeEnvironmentOf(const RunAs& as, std::map<std::string, std::string>& env) {
  std::erase_if(env, [](const auto& kv) { return !PassedToOtherUsers(kv.first); });
  env["HOME"] = as.home;
  env["USER"] = env["LOGNAME"] = as.name;
}

std::filesystem::path RankFile(const std::filesystem::path& log_dir, int rank,
                               std::string_view ext) {
  char name[48];
  std::snprintf(name, sizeof name, "rank_%05d.%.*s", rank, static_cast<int>(ext.size()),
                ext.data());
  return log_dir / name;
}

int OpenRankFile(const std::filesystem::path& path, struct stat* st) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return -1;
  if (::fstat(fd, st) != 0 || !S_ISREG(st->st_mode)) {
    ::close(fd);
    errno = EINVAL;
    return -1;
  }
  return fd;
}

RankEnd ReadRankEnd(const std::filesystem::path& log_dir, int rank, std::string node) {
  RankEnd e;
  e.rank = rank;
  e.node = std::move(node);
  struct stat st {};
  const int fd = OpenRankFile(RankFile(log_dir, rank, "exit"), &st);
  if (fd < 0) return e;
  char text[32] = {};
  const ssize_t n = ::read(fd, text, sizeof text - 1);
  ::close(fd);
  if (n <= 0) return e;
  char* end = nullptr;
  errno = 0;
  const long value = std::strtol(text, &end, 10);
  if (end == text || errno != 0 || value < 0 || value > 1000) return e;
  const int code = static_cast<int>(value);
  if (code > 128 && code < 128 + 65) {
    e.signal = code - 128;
  } else {
    e.exit_code = code;
  }
  return e;
}

}  // namespace belay::sched
