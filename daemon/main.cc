// belayd: the coordinator daemon. Wiring only: the store, the scheduler, the supervisor and
// its loop, the worker link on TCP, the coordinator API on a Unix socket and, when asked for,
// Prometheus metrics over HTTP.
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>

#include "CLI/CLI.hpp"
#include "common/clock.h"
#include "common/durable_file.h"
#include "common/isolated_spec_check.h"
#include "common/logging.h"
#include "common/strings.h"
#include "common/version.h"
#include "daemon/metrics/daemon_metrics.h"
#include "daemon/metrics/state_collector.h"
#include "daemon/rpc/coordinator_service.h"
#include "daemon/rpc/link_tls.h"
#include "daemon/rpc/peer_registry.h"
#include "daemon/rpc/worker_link_service.h"
#include "daemon/scheduler/local_scheduler.h"
#include "daemon/scheduler/routing_scheduler.h"
#include "daemon/scheduler/slurm_scheduler.h"
#include "daemon/store/rocksdb_store.h"
#include "daemon/supervisor/attempt_tokens.h"
#include "daemon/supervisor/supervisor.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_posix.h"
#include "prometheus/exposer.h"
#include "spdlog/spdlog.h"

namespace {

namespace fs = std::filesystem;
using belay::Cat;

std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop = true; }

struct Options {
  std::string state_dir;
  std::string socket;
  std::string listen = "127.0.0.1:0";
  std::string worker;
  std::string log_level = "info";
  double tick_s = 1.0;
  std::string slurm_conf;                  // empty: SLURM_CONF, else /etc/slurm/slurm.conf
  std::vector<std::string> slurm_job_env;  // KEY=VALUE added to every Slurm job
  int slurm_rpc_budget = 120;
  int slurm_node_poll_s = 60;
  std::string tls_cert, tls_key, tls_ca;  // empty: belayd's own CA in <state>/tls
  bool insecure_worker_link = false;
  std::string metrics_listen;  // empty: no /metrics
  bool public_metrics = false;
};

std::string DefaultStateDir() {
  if (const char* x = std::getenv("XDG_STATE_HOME"); x != nullptr && *x == '/')
    return Cat(x, "/belay");
  if (const char* h = std::getenv("HOME"); h != nullptr && *h == '/')
    return Cat(h, "/.local/state/belay");
  return "/var/lib/belay";
}

// Listens on `path` (replacing a stale socket); every user may connect — who they are comes
// from the connection's credentials.
int ListenUnix(const fs::path& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.string().size() >= sizeof addr.sun_path) {
    ::close(fd);
    errno = ENAMETOOLONG;
    return -1;
  }
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  ::unlink(path.c_str());
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::chmod(path.c_str(), 0666) != 0 || ::listen(fd, 64) != 0) {
    int e = errno;
    ::close(fd);
    errno = e;
    return -1;
  }
  return fd;
}

// `dir` (created when missing) as a directory of belayd's own user with mode `mode`; an
// existing one (an older belayd's, say) is set to it. Refused: a symlink or another's directory.
absl::Status MakeOwnDirectory(const fs::path& dir, fs::perms mode) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::InternalError(Cat("cannot create ", dir.string(), ": ", ec.message()));
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  struct stat st {};
  if (fd < 0 || ::fstat(fd, &st) != 0 || st.st_uid != ::geteuid() ||
      ::fchmod(fd, static_cast<mode_t>(mode)) != 0) {
    const int e = errno;
    if (fd >= 0) ::close(fd);
    return absl::FailedPreconditionError(
        Cat(dir.string(), ": must be a directory of uid ", ::geteuid(),
            fd >= 0 && st.st_uid != ::geteuid() ? Cat(", not ", st.st_uid)
                                                : Cat(": ", std::strerror(e))));
  }
  ::close(fd);
  return absl::OkStatus();
}

// Whether `listen` (host:port) is a loopback address.
bool IsLoopback(const std::string& listen) {
  const std::string host = listen.substr(0, listen.rfind(':'));
  return host.starts_with("127.") || host == "localhost" || host == "[::1]" || host == "::1";
}

// The state directory and its parts, each belayd's own with its mode. Nothing belayd keeps is
// for other users: the state directory lets them through to the socket and their own attempt
// directories (mode 0711) and everything in it is private.
absl::Status PrepareStateDir(const fs::path& state) {
  for (const auto& [dir, mode] :
       {std::pair{state, fs::perms(0711)}, std::pair{state / "store", fs::perms(0700)},
        std::pair{state / "jobs", fs::perms(0700)},
        std::pair{state / "campaigns", fs::perms(0711)}}) {
    if (absl::Status s = MakeOwnDirectory(dir, mode); !s.ok()) return s;
  }
  return absl::OkStatus();
}

// The Slurm cluster's slurm.conf: --slurm-conf, $SLURM_CONF or the default path; empty when
// that file does not exist (no Slurm campaigns then).
std::string FindSlurmConf(const Options& o) {
  std::string conf = o.slurm_conf;
  if (conf.empty()) {
    const char* env = std::getenv("SLURM_CONF");
    conf = env != nullptr && *env != '\0' ? env : "/etc/slurm/slurm.conf";
  }
  if (!std::filesystem::exists(conf)) conf.clear();
  return conf;
}

// Local campaigns go to the local scheduler; campaigns with scheduler = "slurm" to libslurm,
// created when the first one needs it.
std::unique_ptr<belay::sched::RoutingScheduler> MakeScheduler(const Options& o,
                                                              const fs::path& state,
                                                              const std::string& slurm_conf) {
  belay::sched::LocalSchedulerOptions so;
  so.jobs_dir = state / "jobs";
  return std::make_unique<belay::sched::RoutingScheduler>(
      std::make_unique<belay::sched::LocalScheduler>(so),
      [&o, slurm_conf]() -> absl::StatusOr<std::unique_ptr<belay::sched::Scheduler>> {
        belay::sched::SlurmSchedulerOptions sl;
        sl.conf = slurm_conf;
        if (sl.conf.empty())
          return absl::FailedPreconditionError(
              "this belayd knows no Slurm cluster (no slurm.conf)");
        for (const std::string& kv : o.slurm_job_env) {
          const size_t eq = kv.find('=');
          sl.mpi_env.emplace_back(kv.substr(0, eq),
                                  eq == std::string::npos ? "" : kv.substr(eq + 1));
        }
        sl.rpc_budget_per_minute = o.slurm_rpc_budget;
        spdlog::info("Slurm backend: {}", sl.conf);
        return std::make_unique<belay::sched::SlurmScheduler>(std::move(sl));
      });
}

// The worker link's server credentials: TLS unless the operator says otherwise (tokens cross
// the network), with the CA and name the ranks check it by put into `sup`.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> WorkerLinkCredentials(
    const Options& o, const fs::path& state, belay::supervisor::SupervisorOptions& sup) {
  if (o.insecure_worker_link) {
    if (!IsLoopback(o.listen)) {
      spdlog::warn("--insecure-worker-link on {}: attempt tokens cross the network in plain text",
                   o.listen);
    }
    return grpc::InsecureServerCredentials();
  }
  absl::StatusOr<belay::rpc::LinkTls> tls =
      o.tls_cert.empty() ? belay::rpc::LoadOrCreateLinkTls(state / "tls")
                         : belay::rpc::LoadGivenLinkTls(o.tls_cert, o.tls_key, o.tls_ca);
  if (!tls.ok())
    return absl::Status(tls.status().code(), Cat("worker link TLS: ", tls.status().message()));
  grpc::SslServerCredentialsOptions ssl;
  ssl.pem_key_cert_pairs.push_back({tls->key_pem, tls->cert_pem});
  sup.coordinator_ca_pem = tls->ca_pem;
  sup.coordinator_tls_name = tls->server_name;
  return grpc::SslServerCredentials(ssl);
}

struct WorkerLinkServer {
  std::unique_ptr<grpc::Server> server;
  std::string address;  // host:port, as the ranks are told
};

// Serves the worker link on --listen. With port 0, the port of the previous run is taken again
// if it is free, so that workers still running from before a restart reach this belayd; the
// address is kept in <state>/worker_address.
absl::StatusOr<WorkerLinkServer> StartWorkerLink(
    const Options& o, const fs::path& state,
    const std::shared_ptr<grpc::ServerCredentials>& credentials,
    belay::rpc::WorkerLinkService& link, belay::metrics::DaemonMetrics& metrics) {
  const fs::path address_file = state / "worker_address";
  std::string listen = o.listen;
  if (listen.ends_with(":0")) {
    std::ifstream in(address_file);
    std::string previous;
    if (std::getline(in, previous) && previous.starts_with(listen.substr(0, listen.size() - 1)))
      listen = previous;
  }
  WorkerLinkServer out;
  int port = 0;
  for (const std::string& address : {listen, o.listen}) {
    grpc::ServerBuilder link_builder;
    link_builder.AddListeningPort(address, credentials, &port);
    link_builder.RegisterService(&link);
    std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> counted;
    counted.push_back(metrics.WorkerLinkInterceptors());
    link_builder.experimental().SetInterceptorCreators(std::move(counted));
    out.server = link_builder.BuildAndStart();
    if (out.server && port != 0) break;
    spdlog::warn("cannot listen for workers on {}", address);
  }
  if (!out.server || port == 0) {
    return absl::UnavailableError(Cat("cannot listen for workers on ", o.listen));
  }
  out.address = Cat(o.listen.substr(0, o.listen.rfind(':')), ":", port);
  if (absl::StatusOr<belay::AtomicFile> f = belay::AtomicFile::Create(address_file, {.mode = 0600});
      f.ok()) {
    if (absl::Status s = f->Append(out.address + "\n"); s.ok()) s = f->Commit();
  }
  return out;
}

// Accepts the coordinator API's connections on `listen_fd` until stopped: reads each peer's
// credentials, then hands the connection to gRPC.
std::thread StartAcceptor(int listen_fd, const fs::path& socket_path,
                          belay::rpc::PeerRegistry& peers, grpc::Server* api_server) {
  return std::thread([listen_fd, socket_path, &peers, api_server] {
    while (!g_stop) {
      int fd =
          ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);  // gRPC polls it
      if (fd < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (g_stop) break;
        spdlog::error("accept on {}: {}", socket_path.string(), std::strerror(errno));
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        continue;
      }
      ucred cred{};
      socklen_t len = sizeof cred;
      if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
        ::close(fd);
        continue;
      }
      peers.Set(fd, {cred.uid, cred.gid, cred.pid});
      grpc::AddInsecureChannelFromFd(api_server, fd);
    }
  });
}

// The worker link's method names, for the metrics' method label.
std::vector<std::string> WorkerLinkMethods() {
  std::vector<std::string> out;
  const google::protobuf::ServiceDescriptor* service =
      google::protobuf::DescriptorPool::generated_pool()->FindServiceByName("belay.v1.WorkerLink");
  for (int i = 0; service != nullptr && i < service->method_count(); ++i)
    out.push_back(service->method(i)->name());
  return out;
}

// Serves /metrics on --metrics-listen (nullptr when not asked for; main() has refused an
// address that is not loopback without --public-metrics).
absl::StatusOr<std::unique_ptr<prometheus::Exposer>> StartMetrics(
    const Options& o, const std::vector<std::shared_ptr<prometheus::Collectable>>& collectables) {
  if (o.metrics_listen.empty()) return nullptr;
  std::unique_ptr<prometheus::Exposer> exposer;
  try {
    exposer = std::make_unique<prometheus::Exposer>(o.metrics_listen, 2);
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        Cat("cannot serve metrics on ", o.metrics_listen, ": ", e.what()));
  }
  for (const std::shared_ptr<prometheus::Collectable>& c : collectables)
    exposer->RegisterCollectable(c);
  return exposer;
}

// Supervision rounds every tick_s seconds until SIGTERM or SIGINT.
void SuperviseUntilStopped(belay::supervisor::Supervisor& supervisor,
                           const belay::store::Store& store, double tick_s,
                           belay::metrics::DaemonMetrics& metrics) {
  const auto tick = std::chrono::milliseconds(static_cast<int64_t>(tick_s * 1000));
  bool read_only_reported = false;
  while (!g_stop) {
    const auto round_start = std::chrono::steady_clock::now();
    absl::Status s = supervisor.Tick();
    metrics.SupervisorRound(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - round_start).count());
    if (!s.ok() && !read_only_reported) {
      spdlog::critical("supervision stopped: {}", std::string(s.message()));
      read_only_reported = !store.write_error().ok();
    }
    for (auto waited = std::chrono::milliseconds(0); waited < tick && !g_stop;
         waited += std::chrono::milliseconds(50)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
}

int Fail(const absl::Status& s) {
  spdlog::critical("{}", std::string(s.message()));
  return 1;
}

int Run(const Options& o) {
  if (absl::Status s = belay::InitLogging("belayd", o.log_level); !s.ok()) {
    std::cerr << "belayd: " << s.message() << "\n";
    return 2;
  }
  const fs::path state = fs::absolute(o.state_dir.empty() ? DefaultStateDir() : o.state_dir);
  if (absl::Status s = PrepareStateDir(state); !s.ok()) return Fail(s);
  absl::StatusOr<std::string> token_key =
      belay::supervisor::AttemptTokens::LoadOrCreateKey(state / "token.key");
  if (!token_key.ok()) return Fail(token_key.status());
  absl::StatusOr<std::unique_ptr<belay::store::RocksDbStore>> rocksdb =
      belay::store::RocksDbStore::Open(state / "store");
  if (!rocksdb.ok()) return Fail(rocksdb.status());
  belay::SystemClock clock;
  const std::string slurm_conf = FindSlurmConf(o);
  std::unique_ptr<belay::sched::RoutingScheduler> scheduler = MakeScheduler(o, state, slurm_conf);
  belay::metrics::DaemonMetrics metrics(WorkerLinkMethods(),
                                        [&scheduler] { return scheduler->controller_calls(); });
  belay::metrics::TimedStore store(**rocksdb, metrics);

  belay::supervisor::SupervisorOptions sup_options;
  sup_options.node_state_interval = std::chrono::seconds(o.slurm_node_poll_s);
  sup_options.state_dir = state;
  sup_options.worker_program = o.worker;
  // As root, every campaign's ranks run as the user who submitted it; otherwise belayd runs
  // only its own user's campaigns (the coordinator API refuses other users' submissions).
  sup_options.run_as_owner = ::geteuid() == 0;
  sup_options.token_key = *std::move(token_key);
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> link_credentials =
      WorkerLinkCredentials(o, state, sup_options);
  if (!link_credentials.ok()) return Fail(link_credentials.status());
  belay::supervisor::Supervisor supervisor(store, *scheduler, clock, sup_options);

  // Campaigns and nodes are read from the store at scrape time (state_collector.h says why).
  std::vector<std::shared_ptr<prometheus::Collectable>> collectables = metrics.collectables();
  collectables.push_back(
      std::make_shared<belay::metrics::StateCollector>(store, clock, supervisor.node_health()));
  absl::StatusOr<std::unique_ptr<prometheus::Exposer>> exposer = StartMetrics(o, collectables);
  if (!exposer.ok()) return Fail(exposer.status());

  // The worker link; its address goes into every attempt's environment.
  belay::rpc::WorkerLinkService link(supervisor);
  absl::StatusOr<WorkerLinkServer> link_server =
      StartWorkerLink(o, state, *link_credentials, link, metrics);
  if (!link_server.ok()) return Fail(link_server.status());
  supervisor.set_coordinator_address(link_server->address);

  // The coordinator API: connections accepted here, credentials read, then handed to gRPC.
  belay::rpc::PeerRegistry peers;
  belay::rpc::DaemonFacts facts;
  facts.version = belay::VersionLine("belayd");
  facts.state_dir = state;
  facts.worker_listen_address = link_server->address;
  facts.start_time = clock.Now();
  facts.slurm_conf = slurm_conf;
  facts.slurm_calls = [&scheduler] { return scheduler->controller_calls(); };
  facts.slurm_rpc_budget_per_minute = o.slurm_rpc_budget;
  belay::rpc::CoordinatorService coordinator(supervisor, store, peers, clock, facts);
  grpc::ServerBuilder api_builder;
  api_builder.RegisterService(&coordinator);
  std::unique_ptr<grpc::Server> api_server = api_builder.BuildAndStart();
  const fs::path socket_path = o.socket.empty() ? state / "belayd.sock" : fs::path(o.socket);
  const int listen_fd = ListenUnix(socket_path);
  if (listen_fd < 0) {
    spdlog::critical("cannot listen on {}: {}", socket_path.string(), std::strerror(errno));
    return 1;
  }
  std::thread acceptor = StartAcceptor(listen_fd, socket_path, peers, api_server.get());

  spdlog::info(
      "{}: state in {}, API on {}, workers on {}, local scheduler{}{}", facts.version,
      state.string(), socket_path.string(), link_server->address,
      slurm_conf.empty() ? "" : Cat(", Slurm cluster of ", slurm_conf),
      *exposer == nullptr ? "" : Cat(", metrics on http://", o.metrics_listen, "/metrics"));
  ::signal(SIGTERM, OnSignal);
  ::signal(SIGINT, OnSignal);
  SuperviseUntilStopped(supervisor, store, o.tick_s, metrics);
  spdlog::info("stopping; running attempts keep running and are re-adopted at the next start");
  ::shutdown(listen_fd, SHUT_RDWR);
  ::close(listen_fd);
  acceptor.join();
  api_server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  link_server->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  ::unlink(socket_path.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // A child belayd started by the submit path to parse a campaign file it may not survive.
  if (argc == 2 && std::string_view(argv[1]) == belay::kSpecCheckFlag) return belay::RunSpecCheck();
  CLI::App app{"belayd: the belay coordinator; owns campaign state and drives the scheduler",
               "belayd"};
  app.set_version_flag("--version", belay::VersionLine("belayd"));
  Options o;
  app.add_option("--state-dir", o.state_dir,
                 "state directory: store, campaign files, logs (default $XDG_STATE_HOME/belay or "
                 "~/.local/state/belay)");
  app.add_option("--socket", o.socket,
                 "Unix socket of the coordinator API (default <state-dir>/belayd.sock)");
  app.add_option("--listen", o.listen,
                 "address:port workers reach belayd at (port 0: any free one)");
  app.add_option("--worker", o.worker, "the belay-worker program (default: beside belayd)");
  app.add_option("--log-level", o.log_level, "trace, debug, info, warn, error");
  app.add_option("--tick", o.tick_s, "seconds between supervision rounds")
      ->check(CLI::PositiveNumber);
  app.add_option("--slurm-conf", o.slurm_conf,
                 "slurm.conf of the cluster for scheduler = \"slurm\" campaigns "
                 "(default: $SLURM_CONF, else /etc/slurm/slurm.conf)");
  app.add_option("--slurm-job-env", o.slurm_job_env,
                 "KEY=VALUE added to the environment of every Slurm job (e.g. Open MPI transport "
                 "settings); repeatable");
  app.add_option("--slurm-rpc-budget", o.slurm_rpc_budget, "most libslurm calls per minute")
      ->check(CLI::PositiveNumber);
  app.add_option(
         "--slurm-node-poll", o.slurm_node_poll_s,
         "seconds between reads of the Slurm node states while Slurm campaigns run (default 60)")
      ->check(CLI::PositiveNumber);
  app.add_option("--tls-cert", o.tls_cert,
                 "PEM certificate (chain) the worker link serves (default: belayd's own, made in "
                 "<state-dir>/tls)");
  app.add_option("--tls-key", o.tls_key,
                 "PEM private key of --tls-cert (belayd's own file, mode 0600)");
  app.add_option(
      "--tls-ca", o.tls_ca,
      "PEM CA certificates ranks verify --tls-cert against (default: --tls-cert itself)");
  app.add_flag("--insecure-worker-link", o.insecure_worker_link,
               "serve the worker link without TLS (attempt tokens in plain text; for a trusted "
               "network only)");
  app.add_option("--metrics-listen", o.metrics_listen,
                 "HOST:PORT to serve Prometheus metrics on at /metrics (default: none; a "
                 "loopback address unless --public-metrics)");
  app.add_flag("--public-metrics", o.public_metrics,
               "allow --metrics-listen on a non-loopback address (the metrics name campaigns, "
               "owners and nodes; they hold no tokens)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  if (o.tls_cert.empty() != o.tls_key.empty() || (!o.tls_ca.empty() && o.tls_cert.empty()) ||
      (o.insecure_worker_link && !o.tls_cert.empty())) {
    std::cerr
        << "belayd: --tls-cert and --tls-key go together (with --tls-ca optionally), and not with "
           "--insecure-worker-link\n";
    return 2;
  }
  // The metrics name every user's campaigns: off this machine only when said on purpose.
  if (!o.metrics_listen.empty() && !IsLoopback(o.metrics_listen) && !o.public_metrics) {
    std::cerr << "belayd: --metrics-listen " << o.metrics_listen
              << " is not a loopback address: add --public-metrics to serve the metrics "
                 "(campaign names, owners, progress, nodes) to whoever reaches it\n";
    return 2;
  }
  if (o.worker.empty()) {
    std::error_code ec;
    fs::path self = fs::read_symlink("/proc/self/exe", ec);
    o.worker = ec ? "belay-worker" : (self.parent_path() / "belay-worker").string();
  }
  return Run(o);
}
