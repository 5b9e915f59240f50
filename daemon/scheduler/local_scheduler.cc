// LocalScheduler: posix_spawn into a new session, job records on disk, /proc for jobs an
// earlier belayd started.
#include "daemon/scheduler/local_scheduler.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/escaping.h"
#include "common/durable_file.h"
#include "common/strings.h"
#include "daemon/scheduler/mpi_sandbox.h"
#include "daemon/scheduler/rank_files.h"
#include "nlohmann/json.hpp"

namespace belay::sched {
namespace {

namespace fs = std::filesystem;

// State (field 3) and start time (field 22) of a process; nullopt when there is none.
std::optional<std::pair<char, unsigned long long>> ProcStat(pid_t pid) {
  std::ifstream in(Cat("/proc/", pid, "/stat"));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t close = text.rfind(')');
  if (!in.good() && text.empty()) return std::nullopt;
  if (close == std::string::npos) return std::nullopt;
  std::istringstream rest(text.substr(close + 1));
  std::string field;
  std::vector<std::string> fields;
  while (rest >> field) fields.push_back(field);
  if (fields.size() < 20 || fields[0].empty()) return std::nullopt;
  return std::pair{fields[0][0], std::stoull(fields[19])};
}

// Sends `sig` to every process of session `sid`. (mpirun puts each rank in a process group of
// its own, so signalling the leader's group would miss them; the session holds them all.)
// Returns the number of processes signalled.
int SignalSession(pid_t sid, int sig) {
  int sent = 0;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/proc", ec)) {
    const std::string name = e.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    const pid_t pid = static_cast<pid_t>(std::stol(name));
    if (::getsid(pid) == sid && ::kill(pid, sig) == 0) ++sent;
  }
  return sent;
}

std::string DescribeWait(int status) {
  if (WIFEXITED(status)) return Cat("exited with status ", WEXITSTATUS(status));
  if (WIFSIGNALED(status))
    return Cat("killed by signal ", WTERMSIG(status), " (", strsignal(WTERMSIG(status)), ")");
  return Cat("wait status ", status);
}

std::string Hostname() {
  char buf[256] = {};
  if (gethostname(buf, sizeof buf - 1) != 0) return "localhost";
  return buf;
}

// The job's command line: as the campaign's owner where belayd acts for one (setpriv), under
// mpirun for more than one rank, each rank through the wrapper that records its exit.
std::vector<std::string> LaunchArgv(const LocalSchedulerOptions& options, const JobSpec& job,
                                    const std::optional<RunAs>& as) {
  std::vector<std::string> argv;
  if (as) {
    // Everything the job starts (mpirun included) runs as that user, with its groups.
    argv = {options.setpriv, Cat("--reuid=", as->uid), Cat("--regid=", as->gid), "--init-groups",
            "--"};
  }
  if (job.world_size > 1) {
    for (const char* a : {options.mpirun.c_str(), "-np"}) argv.emplace_back(a);
    argv.push_back(std::to_string(job.world_size));
  }
  for (const char* a : {"/bin/sh", "-c", kRankWrapper, "belay-rank"}) argv.emplace_back(a);
  argv.insert(argv.end(), job.command.begin(), job.command.end());
  return argv;
}

// The environment: the daemon's, minus any rank variables of its own, plus the job's.
std::map<std::string, std::string> LaunchEnvironment(const LocalSchedulerOptions& options,
                                                     const JobSpec& job,
                                                     const std::optional<RunAs>& as,
                                                     const fs::path& log_dir) {
  std::map<std::string, std::string> env = InheritedEnvironment();
  if (as) MakeEnvironmentOf(*as, env);
  if (job.world_size > 1) {
    for (const auto& [k, v] : options.mpi_env) env[k] = v;
  } else {
    env["BELAY_RANK"] = "0";
    env["BELAY_WORLD_SIZE"] = "1";
    env["BELAY_LOCAL_RANK"] = "0";
  }
  for (const auto& [k, v] : job.env) env[k] = v;
  env["BELAY_LOG_DIR"] = log_dir.string();
  return env;
}

// Starts argv in a session of its own (the job survives belayd and is signalled as one
// process group), stdin from /dev/null, stdout and stderr to <log_dir>/launcher.log.
absl::StatusOr<pid_t> SpawnSession(std::vector<std::string> argv,
                                   const std::map<std::string, std::string>& env,
                                   const fs::path& log_dir, const std::string& work_dir) {
  std::vector<std::string> env_strings;
  for (const auto& [k, v] : env) env_strings.push_back(k + "=" + v);
  std::vector<char*> envp, argp;
  for (std::string& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  for (std::string& s : argv) argp.push_back(s.data());
  argp.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&actions);
  posix_spawnattr_init(&attr);
  const std::string launcher_log = (log_dir / "launcher.log").string();
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  // (Not through a symlink, nor blocking on a FIFO: the directory may be the job's user's.)
  posix_spawn_file_actions_addopen(&actions, 1, launcher_log.c_str(),
                                   O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_NONBLOCK, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  if (!work_dir.empty()) posix_spawn_file_actions_addchdir_np(&actions, work_dir.c_str());
  posix_spawnattr_setflags(&attr,
                           POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  pid_t pid = 0;
  int rc = posix_spawnp(&pid, argp[0], &actions, &attr, argp.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) return absl::InternalError(std::strerror(rc));
  return pid;
}

}  // namespace

std::vector<std::pair<std::string, std::string>> DefaultMpiEnvironment() {
  return MpiSandboxEnvironment(MpiSandbox::kOneNode);
}

LocalScheduler::LocalScheduler(LocalSchedulerOptions options) : options_(std::move(options)) {}

absl::StatusOr<std::string> LocalScheduler::Submit(const JobSpec& job) {
  if (job.world_size < 1) return absl::InvalidArgumentError(Cat("world size ", job.world_size));
  if (job.command.empty()) return absl::InvalidArgumentError("empty command");
  if (!job.after_job.empty())
    return absl::InvalidArgumentError("the local backend does not queue jobs behind others");
  std::error_code ec;
  fs::create_directories(options_.jobs_dir, ec);
  if (!ec)
    fs::permissions(options_.jobs_dir, fs::perms::owner_all, fs::perm_options::replace,
                    ec);  // private
  if (ec)
    return absl::InternalError(Cat(options_.jobs_dir.string(), ": cannot create: ", ec.message()));
  // Idempotent per (campaign, attempt): the key file names the job already started.
  const fs::path key_file =
      options_.jobs_dir / ("key-" + absl::BytesToHexString(Cat(job.campaign_id, "/", job.attempt)));
  if (std::ifstream in(key_file); in) {
    std::string existing;
    if (std::getline(in, existing) && Find(existing).ok()) return existing;
  }
  const fs::path log_dir = fs::absolute(job.log_dir);
  for (int r = 0; r < job.world_size; ++r) fs::remove(RankFile(log_dir, r, "exit"), ec);
  absl::StatusOr<std::optional<RunAs>> as = ResolveRunAs(job);
  if (!as.ok()) return as.status();
  if (absl::Status s = PrepareLogDirectory(job, *as); !s.ok()) return s;

  const std::vector<std::string> argv = LaunchArgv(options_, job, *as);
  absl::StatusOr<pid_t> spawned =
      SpawnSession(argv, LaunchEnvironment(options_, job, *as, log_dir), log_dir, job.work_dir);
  if (!spawned.ok()) {
    return absl::Status(spawned.status().code(),
                        Cat("cannot start ", argv[0], " for campaign ", job.campaign_id,
                            " attempt ", job.attempt, ": ", spawned.status().message()));
  }
  const pid_t pid = *spawned;
  children_.insert(pid);
  std::optional<std::pair<char, unsigned long long>> stat = ProcStat(pid);
  Record record;
  record.log_dir = log_dir;
  record.world_size = job.world_size;
  record.pid = pid;
  record.start_ticks = stat ? stat->second : 0;
  const std::string id = Cat(pid, "-", record.start_ticks);
  if (absl::Status s = Save(id, record); !s.ok()) {
    // Without its record the job could not be found again: do not leave it running.
    SignalSession(pid, SIGKILL);
    int status;
    ::waitpid(pid, &status, 0);
    children_.erase(pid);
    return s;
  }
  jobs_[id] = record;
  absl::StatusOr<AtomicFile> key = AtomicFile::Create(key_file);
  absl::Status saved = key.ok() ? key->Append(id + "\n") : key.status();
  if (saved.ok()) saved = key->Commit();
  if (!saved.ok()) return saved;
  return id;
}

absl::Status LocalScheduler::Save(const std::string& id, const Record& r) const {
  nlohmann::json j = {{"log_dir", r.log_dir.string()},
                      {"world_size", r.world_size},
                      {"pid", r.pid},
                      {"start_ticks", r.start_ticks}};
  if (r.wait_status) j["wait_status"] = *r.wait_status;
  absl::StatusOr<AtomicFile> file = AtomicFile::Create(options_.jobs_dir / (id + ".json"));
  if (!file.ok()) return file.status();
  if (absl::Status s = file->Append(j.dump() + "\n"); !s.ok()) return s;
  return file->Commit();
}

absl::StatusOr<LocalScheduler::Record*> LocalScheduler::Find(const std::string& id) {
  if (auto it = jobs_.find(id); it != jobs_.end()) return &it->second;
  if (id.empty() || id.find('/') != std::string::npos ||
      id.find_first_not_of("0123456789-") != std::string::npos) {
    return absl::NotFoundError(Cat("\"", id, "\" is not a local job id"));
  }
  std::ifstream in(options_.jobs_dir / (id + ".json"));
  if (!in) return absl::NotFoundError(Cat("no local job ", id));
  nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  Record r;
  if (!j.is_object() || !j.contains("log_dir") || !j["log_dir"].is_string() || !j.contains("pid") ||
      !j["pid"].is_number_integer() || !j.contains("start_ticks") ||
      !j["start_ticks"].is_number_unsigned() || !j.contains("world_size") ||
      !j["world_size"].is_number_integer()) {
    return absl::DataLossError(
        Cat((options_.jobs_dir / (id + ".json")).string(), ": not a job record"));
  }
  r.log_dir = j["log_dir"].get<std::string>();
  r.world_size = j["world_size"].get<int>();
  r.pid = j["pid"].get<pid_t>();
  r.start_ticks = j["start_ticks"].get<unsigned long long>();
  if (j.contains("wait_status") && j["wait_status"].is_number_integer())
    r.wait_status = j["wait_status"].get<int>();
  return &(jobs_[id] = r);
}

bool LocalScheduler::LeaderRunning(const std::string& id, Record& r) {
  if (r.wait_status) return false;
  if (children_.contains(r.pid)) {
    int status = 0;
    pid_t got = ::waitpid(r.pid, &status, WNOHANG);
    if (got == 0) return true;
    children_.erase(r.pid);
    if (got == r.pid) {
      r.wait_status = status;
      Save(id, r).IgnoreError();  // best effort: a restarted daemon then knows the status
    }
    return false;
  }
  // Started by an earlier belayd: alive while a process with that pid and start time exists
  // and is not a zombie.
  std::optional<std::pair<char, unsigned long long>> stat = ProcStat(r.pid);
  return stat && stat->second == r.start_ticks && stat->first != 'Z' && stat->first != 'X';
}

JobStatus LocalScheduler::Ended(const std::string& id, const Record& r) const {
  JobStatus s;
  s.job_id = id;
  s.state = JobState::kEnded;
  s.nodes = {Hostname()};
  s.message = r.wait_status ? Cat("leader ", DescribeWait(*r.wait_status))
                            : "leader ended while belayd was not watching (status unknown)";
  for (int rank = 0; rank < r.world_size; ++rank) {
    RankEnd e = ReadRankEnd(r.log_dir, rank, s.nodes[0]);
    if (!e.exit_code && e.signal == 0 && r.world_size == 1 && r.wait_status &&
        WIFSIGNALED(*r.wait_status)) {
      e.signal = WTERMSIG(*r.wait_status);  // the wrapper itself was killed with its rank
    }
    s.ranks.push_back(e);
  }
  return s;
}

absl::StatusOr<std::vector<JobStatus>> LocalScheduler::Poll(const std::vector<std::string>& ids) {
  std::vector<JobStatus> out;
  for (const std::string& id : ids) {
    absl::StatusOr<Record*> r = Find(id);
    if (!r.ok()) {
      JobStatus s;
      s.job_id = id;
      s.state = JobState::kUnknown;
      s.message = std::string(r.status().message());
      out.push_back(std::move(s));
      continue;
    }
    if (LeaderRunning(id, **r)) {
      JobStatus s;
      s.job_id = id;
      s.state = JobState::kRunning;
      s.nodes = {Hostname()};
      out.push_back(std::move(s));
    } else {
      out.push_back(Ended(id, **r));
    }
  }
  return out;
}

absl::Status LocalScheduler::Signal(const std::string& id, int sig) {
  absl::StatusOr<Record*> r = Find(id);
  if (!r.ok()) return r.status();
  if (!LeaderRunning(id, **r)) return absl::OkStatus();
  // A process may fork while the session is scanned: for SIGKILL, scan until none is left.
  const int passes = sig == SIGKILL ? 5 : 1;
  for (int i = 0; i < passes && SignalSession((*r)->pid, sig) > 0; ++i) {
  }
  return absl::OkStatus();
}

}  // namespace belay::sched
