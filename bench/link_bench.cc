// belayd ingesting worker-link traffic from simulated ranks, against a bare gRPC server with
// empty handlers (the floor of the transport) measured in the same invocation.
//
//   link_bench run --bin BIN_DIR [--seconds S] [--ranks 1000,10000]
//
// It prepares a tiny campaign, starts a real belayd (RocksDB store, local scheduler) pinned to
// CPU 0 whose "worker" only records its attempt token and sleeps, and then, from CPU 1:
//   saturation  4 client threads send as fast as they can for S seconds: 9 heartbeats for
//               every step report (rank 0's, one step each) — the most belayd ingests on one core;
//   ranks N     open loop at the rate N ranks produce: one heartbeat per rank every 5 s plus
//               rank 0's step report every second; whether belayd keeps up, and the latency.
// The same loads then go to the baseline server (this program in `serve` mode, also on
// CPU 0). Reported: requests/s achieved, p50/p99 latency, and belayd over baseline.
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "belay/v1/worker.grpc.pb.h"
#include "grpcpp/grpcpp.h"

namespace {

namespace fs = std::filesystem;
namespace v1 = ::belay::v1;
using Clock = std::chrono::steady_clock;

// The baseline: the worker link with handlers that do nothing.
class EmptyLink final : public v1::WorkerLink::Service {
  grpc::Status Heartbeat(grpc::ServerContext*, const v1::HeartbeatRequest*, v1::HeartbeatResponse*) override {
    return grpc::Status::OK;
  }
  grpc::Status ReportSteps(grpc::ServerContext*, const v1::ReportStepsRequest* req,
                           v1::ReportStepsResponse* resp) override {
    resp->set_accepted(req->steps_size());
    return grpc::Status::OK;
  }
};

int Serve(const std::string& port_file) {
  EmptyLink service;
  grpc::ServerBuilder b;
  int port = 0;
  b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  b.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = b.BuildAndStart();
  std::ofstream(port_file) << "127.0.0.1:" << port << "\n";
  server->Wait();
  return 0;
}

void Pin(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu % std::max(1, static_cast<int>(std::thread::hardware_concurrency())), &set);
  sched_setaffinity(0, sizeof set, &set);
}

pid_t Spawn(const std::vector<std::string>& argv, const std::string& log, int cpu) {
  pid_t pid = fork();
  if (pid == 0) {
    Pin(cpu);
    FILE* f = std::fopen(log.c_str(), "a");
    if (f != nullptr) {
      dup2(fileno(f), 1);
      dup2(fileno(f), 2);
    }
    std::vector<char*> a;
    for (const std::string& s : argv) a.push_back(const_cast<char*>(s.c_str()));
    a.push_back(nullptr);
    execv(a[0], a.data());
    _exit(127);
  }
  return pid;
}

std::string Slurp(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

bool WaitFor(const fs::path& p, int seconds) {
  for (int i = 0; i < seconds * 10; ++i) {
    if (fs::exists(p) && !Slurp(p).empty()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

struct Result {
  double offered = 0;  // requests/s asked for (0: as fast as possible)
  double achieved = 0;
  double p50_ms = 0, p99_ms = 0;
  int64_t errors = 0;
};

// Sends for `seconds` from `threads` threads; rate 0 = closed loop. One request in ten is a
// step report.
Result Load(const std::string& address, const std::string& token, int ranks, double rate, double seconds,
            int threads) {
  std::vector<std::vector<double>> lat(static_cast<size_t>(threads));
  std::atomic<int64_t> errors{0}, sent{0}, step{1};
  const auto start = Clock::now();
  const auto end = start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      grpc::ChannelArguments args;
      args.SetInt("grpc.channel_id", t);  // a connection per thread
      auto stub = v1::WorkerLink::NewStub(
          grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args));
      const double per_thread = rate / threads;
      int64_t i = 0;
      for (;;) {
        auto due = start;
        if (per_thread > 0) {
          due = start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(i / per_thread));
          if (due >= end) break;
          std::this_thread::sleep_until(due);
        } else if (Clock::now() >= end) {
          break;
        }
        const auto t0 = Clock::now();
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
        grpc::Status s;
        if ((i + t) % 10 == 0) {
          v1::ReportStepsRequest req;
          req.set_attempt_token(token);
          v1::StepMetrics* m = req.add_steps();
          m->set_step(step++);
          m->set_loss(3.0);
          m->set_tokens_per_s(1e5);
          v1::ReportStepsResponse resp;
          s = stub->ReportSteps(&ctx, req, &resp);
        } else {
          v1::HeartbeatRequest req;
          req.set_attempt_token(token);
          req.set_rank(static_cast<int32_t>((i * threads + t) % ranks));
          req.set_step(i);
          v1::HeartbeatResponse resp;
          s = stub->Heartbeat(&ctx, req, &resp);
        }
        // Open loop: latency from when the request was due (queueing behind is part of it).
        const auto from = per_thread > 0 ? due : t0;
        lat[static_cast<size_t>(t)].push_back(std::chrono::duration<double, std::milli>(Clock::now() - from).count());
        if (!s.ok()) ++errors;
        ++sent;
        ++i;
      }
    });
  }
  for (std::thread& th : pool) th.join();
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  std::vector<double> all;
  for (auto& v : lat) all.insert(all.end(), v.begin(), v.end());
  std::sort(all.begin(), all.end());
  Result r;
  r.offered = rate;
  r.achieved = static_cast<double>(sent) / elapsed;
  if (!all.empty()) {
    r.p50_ms = all[all.size() / 2];
    r.p99_ms = all[std::min(all.size() - 1, all.size() * 99 / 100)];
  }
  r.errors = errors;
  return r;
}

int Run(const fs::path& bin, double seconds, const std::vector<int>& ranks) {
  const fs::path dir = fs::temp_directory_path() / ("belay_link_bench_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const fs::path self = fs::read_symlink("/proc/self/exe");
  // Data for a campaign that validates; the "worker" records its token and sleeps.
  if (std::system(("cd " + dir.string() + " && " + (bin / "belay").string() +
                   " data prepare --out data /usr/share/common-licenses/Apache-2.0 >/dev/null")
                      .c_str()) != 0) {
    std::cerr << "link_bench: data prepare failed\n";
    return 1;
  }
  std::ofstream(dir / "worker.sh") << "#!/bin/sh\necho \"$BELAY_TOKEN\" > \"$BELAY_LOG_DIR/token\"\nexec sleep 3600\n";
  fs::permissions(dir / "worker.sh", fs::perms::owner_all);
  std::ofstream(dir / "bench.toml") << "[campaign]\nname = \"bench\"\n[model]\nn_layer = 1\nn_head = 1\nd_model = 8\n"
                                       "seq_len = 8\nvocab_size = 257\n[data]\ntrain = \"data/train_*.bin\"\n"
                                       "[train]\ntotal_steps = 1000000000\nmicro_batch = 1\nglobal_batch = 1\nlr = 1e-3\n"
                                       "[checkpoint]\ndir = \"ckpt\"\nevery_steps = 1000\n";
  Pin(1);
  const fs::path state = dir / "state";
  pid_t belayd = Spawn({(bin / "belayd").string(), "--state-dir", state.string(), "--worker",
                        (dir / "worker.sh").string(), "--log-level", "warn", "--insecure-worker-link"},
                       (dir / "belayd.log").string(), 0);
  const std::string belay = (bin / "belay").string() + " --socket " + (state / "belayd.sock").string();
  for (int i = 0; i < 100 && std::system((belay + " daemon >/dev/null 2>&1").c_str()) != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (std::system((belay + " submit " + (dir / "bench.toml").string() + " >/dev/null").c_str()) != 0 ||
      !WaitFor(state / "campaigns" / "bench-1" / "attempt_1" / "token", 30)) {
    std::cerr << "link_bench: the campaign did not start; see " << (dir / "belayd.log") << "\n";
    kill(belayd, SIGTERM);
    return 1;
  }
  const std::string token = Slurp(state / "campaigns" / "bench-1" / "attempt_1" / "token");
  const std::string belayd_address = Slurp(state / "worker_address");
  pid_t baseline = Spawn({self.string(), "serve", (dir / "baseline_port").string()}, (dir / "baseline.log").string(), 0);
  WaitFor(dir / "baseline_port", 10);
  const std::string baseline_address = Slurp(dir / "baseline_port");

  std::printf("worker-link ingestion: belayd (RocksDB store, synced state, buffered metrics) vs an empty gRPC "
              "server, each on CPU 0; load from CPU 1; %.0f s per row\n", seconds);
  std::printf("%-10s %-12s %10s %10s %9s %9s %7s\n", "server", "load", "offered/s", "achieved/s", "p50 ms",
              "p99 ms", "errors");
  auto row = [&](const char* who, const std::string& load, const Result& r) {
    std::printf("%-10s %-12s %10s %10.0f %9.2f %9.2f %7lld\n", who, load.c_str(),
                r.offered > 0 ? std::to_string(static_cast<int64_t>(r.offered)).c_str() : "max", r.achieved,
                r.p50_ms, r.p99_ms, static_cast<long long>(r.errors));
    std::fflush(stdout);
  };
  Result sat_b = Load(belayd_address, token, 10000, 0, seconds, 4);
  row("belayd", "saturation", sat_b);
  Result sat_0 = Load(baseline_address, token, 10000, 0, seconds, 4);
  row("baseline", "saturation", sat_0);
  for (int n : ranks) {
    const double rate = n / 5.0 + 1.0;
    row("belayd", std::to_string(n) + " ranks", Load(belayd_address, token, n, rate, seconds, 4));
    row("baseline", std::to_string(n) + " ranks", Load(baseline_address, token, n, rate, seconds, 4));
  }
  std::printf("belayd / baseline saturation throughput: %.2f\n", sat_0.achieved > 0 ? sat_b.achieved / sat_0.achieved : 0.0);
  kill(baseline, SIGKILL);
  std::system((belay + " cancel bench-1 >/dev/null 2>&1").c_str());
  std::this_thread::sleep_for(std::chrono::seconds(2));
  kill(belayd, SIGTERM);
  int st;
  waitpid(belayd, &st, 0);
  waitpid(baseline, &st, 0);
  // The cancel sent SIGUSR1 to the sleeping "worker", which ends it.
  fs::remove_all(dir);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.size() == 2 && args[0] == "serve") return Serve(args[1]);
  fs::path bin;
  double seconds = 5;
  std::vector<int> ranks = {1000, 10000};
  for (size_t i = 0; i + 1 < args.size(); ++i) {
    if (args[i] == "--bin") bin = args[i + 1];
    if (args[i] == "--seconds") seconds = std::atof(args[i + 1].c_str());
    if (args[i] == "--ranks") {
      ranks.clear();
      std::stringstream ss(args[i + 1]);
      for (std::string x; std::getline(ss, x, ',');) ranks.push_back(std::atoi(x.c_str()));
    }
  }
  if (args.empty() || args[0] != "run" || bin.empty()) {
    std::cerr << "usage: link_bench run --bin BIN_DIR [--seconds S] [--ranks 1000,10000]\n";
    return 2;
  }
  return Run(fs::absolute(bin), seconds, ranks);
}
