// belayd carrying one attempt of 100,000 ranks over the worker link, against an empty gRPC
// server on the same TLS certificate, measured in the same invocation.
//
//   link_bench run [--ranks 100000] [--seconds 180] [--steps-per-s 5] [--channels 8]
//
// belayd's store, supervisor and worker link (link_bench_server.h) run in a process pinned to
// CPU 0, the load from this one on CPU 1. The load impersonates every rank with the attempt's
// token over a pool of TLS channels (one thread each): every rank registers, then sends a
// heartbeat at the interval belayd handed out (first ones spread over the interval), and rank
// 0 sends step reports at --steps-per-s with both per-rank arrays (--ranks values each). The
// load is open loop: a request's latency counts from when it was due. Reported for each
// server: requests/s, p50/p99 latency of heartbeats and step reports, its CPU share and RSS
// (/proc), store growth over the window (extrapolated to a day) and whether every step report
// is in the store afterwards.
#include <sched.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "belay/v1/worker.grpc.pb.h"
#include "bench/link_bench_server.h"
#include "daemon/rpc/link_tls.h"
#include "daemon/store/records.h"
#include "daemon/store/rocksdb_store.h"
#include "grpcpp/grpcpp.h"
#include "rocksdb/db.h"
#include "worker/runtime/coordinator_client.h"

namespace {

namespace fs = std::filesystem;
namespace v1 = ::belay::v1;
using Clock = std::chrono::steady_clock;

struct Options {
  int32_t ranks = 100000;
  double seconds = 180;
  double steps_per_s = 5;
  int channels = 8;
};

void Pin(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu % std::max(1, static_cast<int>(std::thread::hardware_concurrency())), &set);
  sched_setaffinity(0, sizeof set, &set);
}

pid_t Spawn(const std::vector<std::string>& argv, const fs::path& log, int cpu) {
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

void Stop(pid_t pid) {
  kill(pid, SIGTERM);
  int st;
  waitpid(pid, &st, 0);
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

// A process's CPU time (user + system) in seconds, and its resident and peak resident memory.
struct ProcessUse {
  double cpu_s = 0;
  int64_t rss_kb = 0, hwm_kb = 0;
};
ProcessUse UseOf(pid_t pid) {
  ProcessUse u;
  std::string stat = Slurp(fs::path("/proc") / std::to_string(pid) / "stat");
  std::istringstream in(stat.substr(stat.rfind(')') + 2));
  std::string field;
  long long utime = 0, stime = 0;
  for (int i = 3; in >> field; ++i) {  // field 3 is the state
    if (i == 14) utime = std::atoll(field.c_str());
    if (i == 15) stime = std::atoll(field.c_str());
  }
  u.cpu_s = static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
  std::ifstream status(fs::path("/proc") / std::to_string(pid) / "status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmRSS:", 0) == 0) u.rss_kb = std::atoll(line.c_str() + 6);
    if (line.rfind("VmHWM:", 0) == 0) u.hwm_kb = std::atoll(line.c_str() + 6);
  }
  return u;
}

// Disk use under `dir`, as du counts it (allocated blocks).
int64_t DiskUse(const fs::path& dir) {
  int64_t bytes = 0;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    struct stat st {};
    if (::lstat(it->path().c_str(), &st) == 0 && S_ISREG(st.st_mode))
      bytes += static_cast<int64_t>(st.st_blocks) * 512;
  }
  return bytes;
}

// Compacts every column family of the (closed) store in `dir`, as RocksDB does over time, so
// that overwritten records (campaign, attempt, slow-rank sums) and the write-ahead log no
// longer count. False if the store cannot be opened.
bool Compact(const fs::path& dir) {
  std::vector<std::string> names;
  if (!rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), dir.string(), &names).ok())
    return false;
  std::vector<rocksdb::ColumnFamilyDescriptor> families;
  for (const std::string& n : names) families.emplace_back(n, rocksdb::ColumnFamilyOptions());
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* db = nullptr;
  if (!rocksdb::DB::Open(rocksdb::DBOptions(), dir.string(), families, &handles, &db).ok())
    return false;
  bool ok = true;
  for (rocksdb::ColumnFamilyHandle* h : handles) {
    ok = ok && db->CompactRange(rocksdb::CompactRangeOptions(), h, nullptr, nullptr).ok();
  }
  for (rocksdb::ColumnFamilyHandle* h : handles) db->DestroyColumnFamilyHandle(h);
  delete db;
  return ok;
}

std::unique_ptr<v1::WorkerLink::Stub> Connect(const std::string& address, const std::string& ca_pem,
                                              int id) {
  grpc::ChannelArguments args;
  args.SetInt("grpc.channel_id", id);  // a connection of its own
  return v1::WorkerLink::NewStub(
      belay::runtime::WorkerLinkChannel(address, ca_pem, belay::rpc::kLinkServerName, args));
}

struct Latencies {
  std::vector<double> ms;
  int64_t failed = 0;
  void Merge(const Latencies& o) {
    ms.insert(ms.end(), o.ms.begin(), o.ms.end());
    failed += o.failed;
  }
  double Quantile(double q) {
    if (ms.empty()) return 0;
    std::sort(ms.begin(), ms.end());
    return ms[std::min(ms.size() - 1, static_cast<size_t>(q * static_cast<double>(ms.size())))];
  }
};

// Every rank registers (channel c takes the ranks r with r % channels == c); returns the
// heartbeat interval belayd handed out, 0 if a registration failed.
int64_t RegisterAll(const std::vector<std::unique_ptr<v1::WorkerLink::Stub>>& stubs,
                    const std::string& token, int32_t ranks) {
  std::atomic<int64_t> interval{0}, failed{0};
  std::vector<std::thread> pool;
  const int n = static_cast<int>(stubs.size());
  for (int c = 0; c < n; ++c) {
    pool.emplace_back([&, c] {
      for (int32_t r = c; r < ranks; r += n) {
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
        v1::RegisterRequest req;
        req.set_attempt_token(token);
        req.set_rank(r);
        req.set_world_size(ranks);
        req.set_hostname("node" + std::to_string(r / 4));
        v1::RegisterResponse resp;
        if (stubs[static_cast<size_t>(c)]->Register(&ctx, req, &resp).ok()) {
          interval = resp.heartbeat_interval().seconds();
        } else {
          ++failed;
        }
      }
    });
  }
  for (std::thread& t : pool) t.join();
  return failed > 0 ? 0 : interval.load();
}

struct Window {
  double seconds = 0;
  int64_t heartbeats = 0, steps = 0;
  Latencies hb, step;
  int64_t steps_refused = 0;  // answered, but not every report accepted
};

// The open-loop load for `o.seconds`: rank r's heartbeats at phase(r) + k·interval, rank 0's
// step reports (steps first_step, first_step + 1, ...) every 1/steps_per_s.
Window Drive(const std::vector<std::unique_ptr<v1::WorkerLink::Stub>>& stubs,
             v1::WorkerLink::Stub& steps_stub, const std::string& token, const Options& o,
             int64_t interval_s, int64_t first_step) {
  const int n = static_cast<int>(stubs.size());
  std::vector<Latencies> hb(static_cast<size_t>(n));
  Window w;
  const auto start = Clock::now() + std::chrono::milliseconds(200);
  auto at = [&](double s) {
    return start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
  };
  std::vector<std::thread> pool;
  for (int c = 0; c < n; ++c) {
    pool.emplace_back([&, c] {
      std::vector<std::pair<double, int32_t>> due;  // (seconds from start, rank)
      for (int32_t r = c; r < o.ranks; r += n) {
        const double phase =
            std::fmod(r * 0.6180339887498949, 1.0) * static_cast<double>(interval_s);
        for (double t = phase; t < o.seconds; t += static_cast<double>(interval_s))
          due.emplace_back(t, r);
      }
      std::sort(due.begin(), due.end());
      Latencies& l = hb[static_cast<size_t>(c)];
      for (const auto& [t, r] : due) {
        std::this_thread::sleep_until(at(t));
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
        v1::HeartbeatRequest req;
        req.set_attempt_token(token);
        req.set_rank(r);
        req.set_step(first_step);
        req.set_phase(v1::WORKER_PHASE_FORWARD);
        v1::HeartbeatResponse resp;
        if (!stubs[static_cast<size_t>(c)]->Heartbeat(&ctx, req, &resp).ok()) ++l.failed;
        l.ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - at(t)).count());
      }
    });
  }
  // Rank 0's step reports, each with every rank's step and compute time.
  v1::ReportStepsRequest req;
  req.set_attempt_token(token);
  v1::StepMetrics* m = req.add_steps();
  m->set_loss(3.0);
  m->set_lr(1e-3);
  m->set_step_time_s(1.0 / o.steps_per_s);
  m->set_tokens_per_s(1e6);
  for (int32_t r = 0; r < o.ranks; ++r) {
    m->add_rank_step_time_s(0.2);
    m->add_rank_compute_time_s(0.15 + 1e-7 * r);
  }
  for (int64_t k = 0; static_cast<double>(k) / o.steps_per_s < o.seconds; ++k) {
    const auto due = at(static_cast<double>(k) / o.steps_per_s);
    std::this_thread::sleep_until(due);
    m->set_step(first_step + k);
    m->set_tokens_seen((first_step + k) * 1000);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::ReportStepsResponse resp;
    if (!steps_stub.ReportSteps(&ctx, req, &resp).ok()) {
      ++w.step.failed;
    } else if (resp.accepted() != 1) {
      ++w.steps_refused;
    }
    w.step.ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - due).count());
  }
  for (std::thread& t : pool) t.join();
  w.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  for (Latencies& l : hb) w.hb.Merge(l);
  w.heartbeats = static_cast<int64_t>(w.hb.ms.size());
  w.steps = static_cast<int64_t>(w.step.ms.size());
  return w;
}

struct Row {
  std::string server;
  Window w;
  ProcessUse before, after;
  double wall_s = 0;
  int64_t store_before = 0, store_after = 0;
};

void Print(Row& r) {
  const double requests = static_cast<double>(r.w.heartbeats + r.w.steps);
  Latencies all;
  all.Merge(r.w.hb);
  all.Merge(r.w.step);
  std::printf(
      "%-9s %8.0f %7.2f %7.2f %8.2f %8.2f %7.2f %7.2f %6lld %6.3f %8.0f %8.0f", r.server.c_str(),
      requests / r.w.seconds, r.w.hb.Quantile(0.5), r.w.hb.Quantile(0.99), r.w.step.Quantile(0.5),
      r.w.step.Quantile(0.99), all.Quantile(0.5), all.Quantile(0.99),
      static_cast<long long>(r.w.hb.failed + r.w.step.failed + r.w.steps_refused),
      (r.after.cpu_s - r.before.cpu_s) / r.wall_s, static_cast<double>(r.after.rss_kb) / 1024.0,
      static_cast<double>(r.after.hwm_kb) / 1024.0);
  if (r.store_after > 0) {
    const double growth = static_cast<double>(r.store_after - r.store_before);
    std::printf(" %9.1f %9.2f", growth / 1e6, growth / r.wall_s * 86400.0 / 1e9);
  }
  std::printf("\n");
  std::fflush(stdout);
}

// One server under the load: start it, register every rank, drive the window, measure.
bool Measure(const fs::path& self, const fs::path& dir, const Options& o, const std::string& mode,
             Row& row, pid_t* pid_out) {
  const bool belayd = mode == "serve-belayd";
  const fs::path address_file = dir / (belayd ? "address" : "baseline_address");
  const pid_t pid =
      Spawn({self.string(), mode, dir.string(), std::to_string(o.ranks)}, dir / (mode + ".log"), 0);
  *pid_out = pid;
  if (!WaitFor(address_file, 120) || (belayd && !WaitFor(dir / "token", 5))) {
    std::cerr << "link_bench: " << mode << " did not start; see " << (dir / (mode + ".log"))
              << "\n";
    return false;
  }
  const std::string address = Slurp(address_file), token = Slurp(dir / "token");
  const std::string ca = Slurp(dir / "state" / "tls" / "ca.pem");
  std::vector<std::unique_ptr<v1::WorkerLink::Stub>> stubs;
  for (int c = 0; c < o.channels; ++c) stubs.push_back(Connect(address, ca, c));
  auto steps_stub = Connect(address, ca, o.channels);
  const auto reg_start = Clock::now();
  const int64_t interval = RegisterAll(stubs, token, o.ranks);
  const double reg_s = std::chrono::duration<double>(Clock::now() - reg_start).count();
  if (interval <= 0) {
    std::cerr << "link_bench: registration with " << mode << " failed\n";
    return false;
  }
  std::fprintf(stderr, "%s: %d ranks registered in %.1f s; heartbeat interval %lld s\n",
               mode.c_str(), o.ranks, reg_s, static_cast<long long>(interval));
  std::this_thread::sleep_for(std::chrono::seconds(2));
  if (belayd) row.store_before = DiskUse(dir / "state" / "store");
  row.before = UseOf(pid);
  const auto t0 = Clock::now();
  row.w = Drive(stubs, *steps_stub, token, o, interval, 1);
  row.wall_s = std::chrono::duration<double>(Clock::now() - t0).count();
  row.after = UseOf(pid);
  if (belayd) row.store_after = DiskUse(dir / "state" / "store");
  return true;
}

int Run(const Options& o) {
  const fs::path dir = fs::temp_directory_path() / ("belay_link_bench_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const fs::path self = fs::read_symlink("/proc/self/exe");
  Pin(1);
  std::printf(
      "worker link, one attempt of %d ranks over TLS: heartbeats at belayd's interval from every "
      "rank, rank "
      "0's step reports (%d values per array) at %.0f/s, %.0f s; server on CPU 0, load (%d "
      "channels) on "
      "CPU 1\n",
      o.ranks, o.ranks, o.steps_per_s, o.seconds, o.channels);
  std::printf("%-9s %8s %7s %7s %8s %8s %7s %7s %6s %6s %8s %8s %9s %9s\n", "server", "req/s",
              "hb p50", "hb p99", "step p50", "step p99", "p50 ms", "p99 ms", "errors", "CPU",
              "RSS MB", "peak MB", "du +MB", "du GB/d");
  Row belayd, baseline;
  belayd.server = "belayd";
  baseline.server = "baseline";
  pid_t pid = 0;
  const bool ok = Measure(self, dir, o, "serve-belayd", belayd, &pid);
  if (pid > 0) Stop(pid);
  if (!ok) return 1;
  Print(belayd);
  // Every step report must be in the store (the server is stopped: its store can be opened).
  // What stays of them: the step records' bytes, per day at this rate.
  int64_t stored = -1, step_bytes = 0;
  if (auto st = belay::store::RocksDbStore::Open(dir / "state" / "store"); st.ok()) {
    if (auto steps = belay::store::ListStepMetrics(**st, Slurp(dir / "campaign"), 0, -1);
        steps.ok()) {
      stored = static_cast<int64_t>(steps->size());
      for (const v1::StepMetrics& m : *steps)
        step_bytes += static_cast<int64_t>(m.ByteSizeLong()) + 20;  // + key
    }
  }
  const int64_t raw_after = DiskUse(dir / "state" / "store");
  const bool compacted = Compact(dir / "state" / "store");
  const int64_t compacted_after = DiskUse(dir / "state" / "store");
  pid = 0;
  const bool base_ok = Measure(self, dir, o, "serve-baseline", baseline, &pid);
  if (pid > 0) Stop(pid);
  if (base_ok) Print(baseline);
  std::printf("step reports sent %lld, in belayd's store %lld%s\n",
              static_cast<long long>(belayd.w.steps), static_cast<long long>(stored),
              stored == belayd.w.steps ? " (none lost)" : " (REPORTS LOST)");
  std::printf(
      "belayd's store on disk: %.1f MB after registration, %.1f MB at the window's end (the growth "
      "is "
      "mostly the write-ahead log, which RocksDB drops at each flush); %.1f MB once belayd "
      "stopped, %.1f MB "
      "compacted%s. What accumulates is the step records: %.0f bytes each, %.3f GB/day at %.0f "
      "steps/s\n",
      static_cast<double>(belayd.store_before) / 1e6, static_cast<double>(belayd.store_after) / 1e6,
      static_cast<double>(raw_after) / 1e6, static_cast<double>(compacted_after) / 1e6,
      compacted ? "" : " (compaction failed)",
      stored > 0 ? static_cast<double>(step_bytes) / static_cast<double>(stored) : 0.0,
      static_cast<double>(step_bytes) / belayd.wall_s * 86400.0 / 1e9, o.steps_per_s);
  if (base_ok) {
    std::printf(
        "belayd / baseline CPU per request: %.2f\n",
        ((belayd.after.cpu_s - belayd.before.cpu_s) /
         static_cast<double>(belayd.w.heartbeats + belayd.w.steps)) /
            std::max(1e-12, (baseline.after.cpu_s - baseline.before.cpu_s) /
                                static_cast<double>(baseline.w.heartbeats + baseline.w.steps)));
  }
  fs::remove_all(dir);
  return stored == belayd.w.steps ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.size() == 3 && args[0] == "serve-belayd")
    return belay::bench::ServeBelayd(args[1], std::atoi(args[2].c_str()));
  if (args.size() == 3 && args[0] == "serve-baseline") {
    return belay::bench::ServeBaseline(args[1], std::atoi(args[2].c_str()));
  }
  Options o;
  for (size_t i = 1; i + 1 < args.size(); i += 2) {
    if (args[i] == "--ranks") o.ranks = std::atoi(args[i + 1].c_str());
    if (args[i] == "--seconds") o.seconds = std::atof(args[i + 1].c_str());
    if (args[i] == "--steps-per-s") o.steps_per_s = std::atof(args[i + 1].c_str());
    if (args[i] == "--channels") o.channels = std::atoi(args[i + 1].c_str());
  }
  if (args.empty() || args[0] != "run" || o.ranks < 4 || o.ranks % 4 != 0 || o.seconds <= 0 ||
      o.steps_per_s <= 0 || o.channels < 1) {
    std::cerr << "usage: link_bench run [--ranks N (a multiple of 4; 100000)] [--seconds S (180)] "
                 "[--steps-per-s R (5)] [--channels C (8)]\n";
    return 2;
  }
  return Run(o);
}
