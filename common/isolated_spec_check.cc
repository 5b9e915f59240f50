// The campaign file check in a child process: see isolated_spec_check.h.
#include "common/isolated_spec_check.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "common/campaign_spec.h"
#include "common/strings.h"

namespace belay {
namespace {

constexpr std::string_view kAnswer = "belay-spec-check: parsed, ";
constexpr size_t kMaxAnswer = 4096;

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
    __has_feature(memory_sanitizer)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif
#else
constexpr bool kSanitized = false;
#endif

std::string Printable(std::string_view s) {
  std::string out;
  for (char c : s.substr(0, 80)) out.push_back(c >= 0x20 && c < 0x7f ? c : '?');
  return out;
}

// Closes its descriptors on every path out.
struct Fds {
  int fd[4] = {-1, -1, -1, -1};
  ~Fds() {
    for (int f : fd) {
      if (f >= 0) ::close(f);
    }
  }
  void Close(int i) {
    if (fd[i] >= 0) ::close(fd[i]);
    fd[i] = -1;
  }
};

// Writes `text` to the child's stdin and reads its answer until it closes stdout or the
// deadline passes. False on timeout.
bool Exchange(int to_child, int from_child, std::string_view text, std::string* answer,
              std::chrono::steady_clock::time_point deadline) {
  size_t sent = 0;
  bool writing = true;
  if (text.empty()) ::shutdown(to_child, SHUT_WR);
  while (true) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p[2] = {{from_child, POLLIN, 0}, {to_child, POLLOUT, 0}};
    const nfds_t n = writing && sent < text.size() ? 2 : 1;
    const int rc = ::poll(p, n, static_cast<int>(std::min<int64_t>(left.count(), 1000)));
    if (rc < 0 && errno != EINTR) return false;
    if (rc <= 0) continue;
    if (n == 2 && (p[1].revents & (POLLOUT | POLLERR | POLLHUP)) != 0) {
      const ssize_t w =
          ::send(to_child, text.data() + sent, text.size() - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (w > 0) sent += static_cast<size_t>(w);
      if (w < 0 && errno != EAGAIN && errno != EINTR) writing = false;  // the child stopped reading
      if (sent == text.size() || !writing) ::shutdown(to_child, SHUT_WR);
    }
    if ((p[0].revents & (POLLIN | POLLERR | POLLHUP)) != 0) {
      char buf[4096];
      const ssize_t r = ::read(from_child, buf, sizeof buf);
      if (r == 0) return true;  // the child closed its stdout (exited, most likely)
      if (r > 0 && answer->size() < kMaxAnswer) answer->append(buf, static_cast<size_t>(r));
      if (r < 0 && errno != EAGAIN && errno != EINTR) return true;
    }
  }
}

// Reaps `pid` by the deadline, killing it past it. nullopt: it was killed for the timeout.
std::optional<int> Reap(pid_t pid, std::chrono::steady_clock::time_point deadline) {
  int status = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    const pid_t got = ::waitpid(pid, &status, WNOHANG);
    if (got == pid) return status;
    if (got < 0 && errno != EINTR) return 0;  // not ours to reap (cannot happen: we spawned it)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  ::kill(pid, SIGKILL);
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return std::nullopt;
}

void Limit(pid_t pid, decltype(RLIMIT_CPU) resource, rlim_t soft, rlim_t hard) {
  const rlimit r{soft, hard};
  ::prlimit(pid, resource, &r, nullptr);
}

absl::Status Unsafe(std::string_view why) {
  return absl::InvalidArgumentError(Cat("campaign file could not be parsed safely: ", why));
}

}  // namespace

int RunSpecCheck() {
  if (::geteuid() == 0) {
    // The parser needs no rights at all. (Where uid 65534 does not exist in this user
    // namespace the calls fail and the child goes on as it is: still isolated and bounded.)
    if (::setgroups(0, nullptr) == 0 && ::setresgid(65534, 65534, 65534) == 0) {
      (void)::setresuid(65534, 65534, 65534);
    }
  }
  ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
  ::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);  // a crash leaves no core file
  std::string text;
  char buf[65536];
  while (text.size() <= kMaxSpecBytes) {
    const ssize_t r = ::read(0, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    text.append(buf, static_cast<size_t>(r));
  }
  SpecParseOptions o;
  o.check_paths = false;
  o.base_dir = "/";
  const SpecParseResult parsed = ParseCampaignSpec(text, "campaign.toml", o);
  const std::string answer = Cat(kAnswer, parsed.errors.size(), " errors\n");
  return ::write(1, answer.data(), answer.size()) == static_cast<ssize_t>(answer.size()) ? 0 : 1;
}

absl::Status CheckSpecInChild(std::string_view text, const SpecCheckOptions& options) {
  if (options.argv.empty())
    return absl::InternalError("no program to check the campaign file with");
  // fd[0]: ours, to the child's stdin (a socket: a write to a dead child is EPIPE, not
  // SIGPIPE); fd[1]: the child's stdin. fd[2]: ours, from its stdout; fd[3]: its stdout.
  Fds f;
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, f.fd) != 0 ||
      ::pipe2(f.fd + 2, O_CLOEXEC) != 0) {
    return absl::InternalError(Cat("cannot check the campaign file: ", std::strerror(errno)));
  }
  ::fcntl(f.fd[2], F_SETFL, O_NONBLOCK);

  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&actions);
  posix_spawnattr_init(&attr);
  posix_spawn_file_actions_adddup2(&actions, f.fd[1], 0);
  posix_spawn_file_actions_adddup2(&actions, f.fd[3], 1);
  posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addclosefrom_np(&actions, 3);  // none of belayd's descriptors
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  std::vector<std::string> args = options.argv;
  std::vector<char*> argp;
  for (std::string& a : args) argp.push_back(a.data());
  argp.push_back(nullptr);
  char* envp[] = {nullptr};
  pid_t pid = 0;
  const int rc = ::posix_spawn(&pid, argp[0], &actions, &attr, argp.data(), envp);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    return absl::InternalError(
        Cat("cannot start ", args[0], " to check the campaign file: ", std::strerror(rc)));
  }
  f.Close(1);
  f.Close(3);
  // Set before the child has its input: the parse runs under them. (SIGXCPU at the soft CPU
  // limit, SIGKILL a second later.)
  const auto cpu = static_cast<rlim_t>(options.cpu_limit.count());
  Limit(pid, RLIMIT_CPU, cpu, cpu + 1);
  Limit(pid, RLIMIT_CORE, 0, 0);
  if (!kSanitized) Limit(pid, RLIMIT_AS, options.address_space_limit, options.address_space_limit);

  const auto deadline = std::chrono::steady_clock::now() + options.timeout;
  std::string answer;
  const bool in_time = Exchange(f.fd[0], f.fd[2], text, &answer, deadline);
  f.Close(0);
  f.Close(2);
  const std::optional<int> status =
      Reap(pid, in_time ? deadline : std::chrono::steady_clock::now());
  if (!status) {
    return Unsafe(
        Cat("the check did not finish within ", options.timeout.count(), " ms and was killed"));
  }
  if (WIFSIGNALED(*status)) {
    const int sig = WTERMSIG(*status);
    if (sig == SIGXCPU)
      return Unsafe(Cat("the check used up its ", options.cpu_limit.count(), " s of CPU time"));
    const char* name = sigdescr_np(sig);
    return Unsafe(
        Cat("the check was killed by signal ", sig, " (", name != nullptr ? name : "unknown", ")"));
  }
  if (!WIFEXITED(*status) || WEXITSTATUS(*status) != 0) {
    return Unsafe(
        Cat("the check exited with status ", WIFEXITED(*status) ? WEXITSTATUS(*status) : -1));
  }
  if (!answer.starts_with(kAnswer)) {
    return Unsafe(
        Cat("the check answered \"", Printable(answer.substr(0, answer.find('\n'))), "\""));
  }
  return absl::OkStatus();
}

}  // namespace belay
