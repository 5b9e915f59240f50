// belay's CPU training step (UpdateOnBatch: forward/backward over the micro-batches, clipping,
// AdamW) against the same GPT-2 step in PyTorch (bench/train_step_torch.py), on the same
// shapes and the same OpenMP thread count, in one run. Every measurement runs in its own
// process, and each side runs in the environment as given and, for the shapes named by
// --openblas1 (default: all), again with OPENBLAS_NUM_THREADS=1, since OpenBLAS's pthread
// pool and OpenMP's threads share the cores (PyTorch here calls the same OpenBLAS, so both
// sides get both settings).
//
// Usage: train_step_bench [--steps N] [--warmup N] [--shapes demo,large]
//                         [--openblas1 SHAPES|none] [--python PYTHON] [--torch-script PATH]
#include <cblas.h>
#include <omp.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/rng.h"
#include "common/strings.h"
#include "nlohmann/json.hpp"
#include "worker/model/gpt2.h"
#include "worker/model/params.h"
#include "worker/optim/optimizer.h"
#include "worker/train/update.h"

extern char** environ;

namespace belay {
namespace {

struct Shape {
  std::string name;
  int n_layer, n_head, d_model, seq_len, vocab, micro_batch, accum;
};

const std::vector<Shape>& Shapes() {
  static const std::vector<Shape> shapes = {
      {"demo", 4, 4, 128, 128, 257, 4, 4},     // deploy/examples/demo.toml
      {"large", 6, 6, 384, 256, 50257, 8, 1},  // GPT-2's vocabulary, padded to 50304
  };
  return shapes;
}

const Shape* FindShape(const std::string& name) {
  for (const Shape& s : Shapes()) {
    if (s.name == name) return &s;
  }
  return nullptr;
}

// Shapes named in a comma-separated list; nullopt if one is unknown.
std::optional<std::vector<const Shape*>> ParseShapes(const std::string& list) {
  std::vector<const Shape*> shapes;
  for (size_t p = 0; p <= list.size();) {
    size_t q = std::min(list.find(',', p), list.size());
    const Shape* s = FindShape(list.substr(p, q - p));
    if (s == nullptr) return std::nullopt;
    shapes.push_back(s);
    p = q + 1;
  }
  return shapes;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// An environment variable as this process sees it; null in JSON when unset.
nlohmann::json Env(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr ? nlohmann::json(nullptr) : nlohmann::json(v);
}

// The belay side, in this process: times `steps` calls of UpdateOnBatch after `warmup`, on
// random tokens with all-ones masks, and prints one JSON object.
int MeasureBelay(const Shape& s, int threads, int warmup, int steps) {
  omp_set_num_threads(threads);
  ModelSpec ms;
  ms.n_layer = s.n_layer;
  ms.n_head = s.n_head;
  ms.d_model = s.d_model;
  ms.seq_len = s.seq_len;
  ms.vocab_size = s.vocab;
  TrainSpec ts;  // AdamW betas (0.9, 0.95), eps 1e-8, weight decay 0.1, clip 1.0
  ts.micro_batch = s.micro_batch;
  ts.global_batch = int64_t{s.micro_batch} * s.accum;
  ts.lr = 3e-4;
  ts.min_lr = 3e-5;

  model::ParameterLayout layout(model::Gpt2Config::FromSpec(ms));
  std::vector<float> params(static_cast<size_t>(layout.total())), grads(params.size());
  model::InitGpt2(layout, params, 1234);
  const size_t n = static_cast<size_t>(s.accum) * static_cast<size_t>(s.micro_batch) *
                   static_cast<size_t>(s.seq_len);
  std::vector<int32_t> inputs(n), targets(n);
  std::vector<uint8_t> masks(n, 1);
  SplitMix64 rng(99);
  for (size_t i = 0; i < n; ++i) {
    inputs[i] = static_cast<int32_t>(rng.Next() % static_cast<uint64_t>(s.vocab));
    targets[i] = static_cast<int32_t>(rng.Next() % static_cast<uint64_t>(s.vocab));
  }

  model::Gpt2 gpt(layout, s.micro_batch, s.seq_len);
  optim::Optimizer opt(optim::WholeTensors(layout.tensors()), layout.total(), ts, {});
  const int64_t total = warmup + steps;
  std::vector<double> times;
  double loss = 0;
  for (int64_t step = 1; step <= total; ++step) {
    auto t0 = std::chrono::steady_clock::now();
    train::UpdateResult r =
        train::UpdateOnBatch(gpt, opt, ts, total, step, params, grads, inputs.data(),
                             targets.data(), masks.data(), s.accum);
    double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (step > warmup) times.push_back(t);
    loss = r.loss;
  }
  double median = Median(times);
  nlohmann::json out = {
      {"side", "belay"},
      {"params", layout.total()},
      {"padded_vocab", layout.config().padded_vocab},
      {"tokens_per_step", n},
      {"median_s", median},
      {"tokens_per_s", static_cast<double>(n) / median},
      {"step_s", times},
      {"loss", loss},
      {"omp_threads", omp_get_max_threads()},
      {"openblas_threads", openblas_get_num_threads()},
      {"openblas_config", openblas_get_config()},
      {"omp_num_threads_env", Env("OMP_NUM_THREADS")},
      {"openblas_num_threads_env", Env("OPENBLAS_NUM_THREADS")},
  };
  std::cout << out.dump() << "\n";
  return 0;
}

// Runs argv with this environment plus `set` (overriding), and returns the JSON object that
// is the last line of its stdout. Its stderr passes through.
absl::StatusOr<nlohmann::json> RunChild(const std::vector<std::string>& argv,
                                        const std::map<std::string, std::string>& set) {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string kv = *e;
    if (!set.contains(kv.substr(0, kv.find('=')))) env.push_back(kv);
  }
  for (const auto& [k, v] : set) env.push_back(Cat(k, "=", v));
  std::vector<char*> cargv, cenv;
  for (const std::string& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  for (const std::string& e : env) cenv.push_back(const_cast<char*>(e.c_str()));
  cargv.push_back(nullptr);
  cenv.push_back(nullptr);

  int fds[2];
  if (pipe(fds) != 0) return absl::InternalError(Cat("pipe: ", std::strerror(errno)));
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addclose(&actions, fds[0]);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_addclose(&actions, fds[1]);
  pid_t pid = 0;
  int rc = posix_spawnp(&pid, cargv[0], &actions, nullptr, cargv.data(), cenv.data());
  posix_spawn_file_actions_destroy(&actions);
  close(fds[1]);
  if (rc != 0) {
    close(fds[0]);
    return absl::InternalError(Cat("cannot run ", argv[0], ": ", std::strerror(rc)));
  }
  std::string out;
  char buf[4096];
  for (ssize_t got; (got = read(fds[0], buf, sizeof buf)) != 0;) {
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) break;
    out.append(buf, static_cast<size_t>(got));
  }
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return absl::InternalError(Cat(argv[0], " ", argv.size() > 1 ? argv[1] : "", " failed"));
  }
  while (!out.empty() && out.back() == '\n') out.pop_back();
  nlohmann::json j = nlohmann::json::parse(out.substr(out.rfind('\n') + 1), nullptr, false);
  if (!j.is_object() || !j.contains("tokens_per_s") || !j.contains("params")) {
    return absl::InternalError(Cat(argv[0], " printed no result: ", out));
  }
  return j;
}

// "OMP/OpenBLAS" threads as the process saw them, then the two environment variables
// ("-" when unset).
std::string ThreadsSeen(const nlohmann::json& r) {
  auto num = [](const nlohmann::json& v) {
    return v.is_number() ? std::to_string(v.get<int>()) : std::string("?");
  };
  auto env = [](const nlohmann::json& v) {
    return v.is_string() ? v.get<std::string>() : std::string("-");
  };
  return Cat(num(r["omp_threads"]), "/", num(r["openblas_threads"]), " env ",
             env(r["omp_num_threads_env"]), "/", env(r["openblas_num_threads_env"]));
}

// "median [min-max]" of the timed steps, in ms.
std::string StepMs(const nlohmann::json& r) {
  std::vector<double> t = r["step_s"].get<std::vector<double>>();
  auto [lo, hi] = std::minmax_element(t.begin(), t.end());
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.0f [%.0f-%.0f]", 1e3 * r["median_s"].get<double>(), 1e3 * *lo,
                1e3 * *hi);
  return buf;
}

std::string LoadAvg() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return Cat(a, " ", b, " ", c);
}

// The two thread configurations each side runs in: the environment as given, and OpenBLAS
// kept to the calling thread (its pthread pool otherwise competes with OpenMP's threads).
struct ThreadConfig {
  const char* label;
  std::map<std::string, std::string> set;
};

int Drive(const std::vector<const Shape*>& shapes, const std::vector<const Shape*>& openblas1,
          int warmup, int steps, const std::string& python, const std::string& script) {
  const int threads = omp_get_max_threads();
  const ThreadConfig configs[] = {{"as given", {}}, {"1", {{"OPENBLAS_NUM_THREADS", "1"}}}};
  std::printf(
      "train_step_bench: fp32 GPT-2 step (fwd+bwd, clip, AdamW), "
      "random tokens, all-ones masks; median of %d steps after %d warm-up\n",
      steps, warmup);
  std::printf(
      "  nproc %ld; OpenMP threads %d on both sides (PyTorch: torch.set_num_threads); "
      "loadavg at start %s\n",
      sysconf(_SC_NPROCESSORS_ONLN), threads, LoadAvg().c_str());
  std::printf(
      "  threads: OpenMP/OpenBLAS as each process saw them, "
      "env OMP_NUM_THREADS/OPENBLAS_NUM_THREADS (- unset)\n");
  std::printf("  %-6s %-9s %-15s %-15s %-18s %-18s %10s %10s %8s\n", "shape", "OPENBLAS_",
              "belay threads", "PyTorch threads", "belay ms", "PyTorch ms", "belay", "PyTorch",
              "belay/");
  std::printf("  %-6s %-9s %-15s %-15s %-18s %-18s %10s %10s %8s\n", "", "NUM_THR", "", "",
              "median [min-max]", "median [min-max]", "tokens/s", "tokens/s", "PyTorch");
  std::fflush(stdout);
  const std::string self = "/proc/self/exe";
  for (const Shape* s : shapes) {
    const std::vector<std::string> belay_argv = {self,
                                                 "--measure",
                                                 s->name,
                                                 "--threads",
                                                 std::to_string(threads),
                                                 "--warmup",
                                                 std::to_string(warmup),
                                                 "--steps",
                                                 std::to_string(steps)};
    const std::vector<std::string> torch_argv = {python,          script,
                                                 "--threads",     std::to_string(threads),
                                                 "--n-layer",     std::to_string(s->n_layer),
                                                 "--n-head",      std::to_string(s->n_head),
                                                 "--d-model",     std::to_string(s->d_model),
                                                 "--seq-len",     std::to_string(s->seq_len),
                                                 "--vocab",       std::to_string(s->vocab),
                                                 "--micro-batch", std::to_string(s->micro_batch),
                                                 "--accum",       std::to_string(s->accum),
                                                 "--warmup",      std::to_string(warmup),
                                                 "--steps",       std::to_string(steps)};
    nlohmann::json losses;
    for (const ThreadConfig& config : configs) {
      if (!config.set.empty() &&
          std::find(openblas1.begin(), openblas1.end(), s) == openblas1.end()) {
        continue;
      }
      // belay, then PyTorch, in each configuration, so that a change in the machine's load
      // affects one pair rather than one side.
      absl::StatusOr<nlohmann::json> belay = RunChild(belay_argv, config.set);
      absl::StatusOr<nlohmann::json> torch = RunChild(torch_argv, config.set);
      for (const auto* r : {&belay, &torch}) {
        if (!r->ok()) {
          std::cerr << s->name << ": " << r->status() << "\n";
          return 1;
        }
      }
      const nlohmann::json& b = *belay;
      const nlohmann::json& t = *torch;
      // The same shapes on both sides, checked rather than assumed.
      if (t["params"] != b["params"] || t["tokens_per_step"] != b["tokens_per_step"]) {
        std::cerr << s->name << ": PyTorch's model has " << t["params"] << " parameters and "
                  << t["tokens_per_step"] << " tokens per step, belay's " << b["params"] << " and "
                  << b["tokens_per_step"] << "\n";
        return 1;
      }
      const double b_tps = b["tokens_per_s"].get<double>();
      const double t_tps = t["tokens_per_s"].get<double>();
      std::printf("  %-6s %-9s %-15s %-15s %-18s %-18s %10.0f %10.0f %8.2f\n", s->name.c_str(),
                  config.label, ThreadsSeen(b).c_str(), ThreadsSeen(t).c_str(), StepMs(b).c_str(),
                  StepMs(t).c_str(), b_tps, t_tps, b_tps / t_tps);
      std::fflush(stdout);
      if (losses.empty()) {
        losses = {b["params"], b["tokens_per_step"], b["loss"], t["loss"]};
      }
    }
    std::printf(
        "  %-6s %lld params, %lld tokens/step; loss after the last step: belay %.3f, "
        "PyTorch %.3f\n",
        s->name.c_str(), losses[0].get<long long>(), losses[1].get<long long>(),
        losses[2].get<double>(), losses[3].get<double>());
  }
  std::printf("  loadavg at end %s\n", LoadAvg().c_str());
  return 0;
}

int Usage() {
  std::cerr << "usage: train_step_bench [--steps N] [--warmup N] [--shapes demo,large] "
               "[--openblas1 SHAPES|none] [--python PYTHON] [--torch-script PATH]\n";
  return 2;
}

int Main(int argc, char** argv) {
  int steps = 10, warmup = 2, threads = 0;
  std::string shapes_arg = "demo,large", openblas1_arg = "all", measure;
  std::string python = "/usr/bin/python3";
  std::string script = BELAY_SOURCE_DIR "/bench/train_step_torch.py";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (i + 1 >= argc) return Usage();
    std::string v = argv[++i];
    if (a == "--steps") {
      steps = std::atoi(v.c_str());
    } else if (a == "--warmup") {
      warmup = std::atoi(v.c_str());
    } else if (a == "--shapes") {
      shapes_arg = v;
    } else if (a == "--openblas1") {
      openblas1_arg = v;
    } else if (a == "--python") {
      python = v;
    } else if (a == "--torch-script") {
      script = v;
    } else if (a == "--measure") {  // internal: one belay measurement in this process
      measure = v;
    } else if (a == "--threads") {
      threads = std::atoi(v.c_str());
    } else {
      return Usage();
    }
  }
  if (steps < 1 || warmup < 0) return Usage();
  if (!measure.empty()) {
    const Shape* s = FindShape(measure);
    if (s == nullptr || threads < 1) return Usage();
    return MeasureBelay(*s, threads, warmup, steps);
  }
  std::optional<std::vector<const Shape*>> shapes = ParseShapes(shapes_arg);
  std::optional<std::vector<const Shape*>> openblas1 = openblas1_arg == "all" ? shapes
                                                       : openblas1_arg == "none"
                                                           ? std::vector<const Shape*>{}
                                                           : ParseShapes(openblas1_arg);
  if (!shapes || !openblas1) return Usage();
  return Drive(*shapes, *openblas1, warmup, steps, python, script);
}

}  // namespace
}  // namespace belay

int main(int argc, char** argv) { return belay::Main(argc, argv); }
