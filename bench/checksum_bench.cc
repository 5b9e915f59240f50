// Checkpoint-verification throughput: Xxh3File over a file in the page cache, against `dd`
// reading the same file to /dev/null in the same run. A ratio near 1 means verifying a shard
// costs no more than reading it.
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "common/checksum.h"

namespace {

double Seconds(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Runs `dd` on the file; returns wall seconds, or a negative value if dd failed.
double TimeDd(const std::filesystem::path& file) {
  auto t0 = std::chrono::steady_clock::now();
  pid_t pid = fork();
  if (pid == 0) {
    std::string in = "if=" + file.string();
    execlp("dd", "dd", in.c_str(), "of=/dev/null", "bs=1M", "status=none",
           static_cast<char*>(nullptr));
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return -1;
  return Seconds(t0);
}

}  // namespace

int main(int argc, char** argv) {
  size_t mib = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 512;
  int reps = 5;
  std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("belay_checksum_bench_" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  std::filesystem::path file = dir / "shard.bin";
  {
    std::mt19937_64 rng(42);
    std::vector<uint64_t> block((1 << 20) / sizeof(uint64_t));
    std::ofstream out(file, std::ios::binary);
    for (size_t i = 0; i < mib; ++i) {
      for (uint64_t& v : block) v = rng();
      out.write(reinterpret_cast<const char*>(block.data()),
                static_cast<std::streamsize>(block.size() * sizeof(uint64_t)));
    }
  }
  // Warm the page cache so both sides read memory, not the disk.
  if (TimeDd(file) < 0) {
    std::cerr << "dd failed\n";
    return 1;
  }
  double best_hash = 1e30, best_dd = 1e30;
  for (int r = 0; r < reps; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    absl::StatusOr<uint64_t> sum = belay::Xxh3File(file);
    double t = Seconds(t0);
    if (!sum.ok()) {
      std::cerr << sum.status() << "\n";
      return 1;
    }
    best_hash = std::min(best_hash, t);
    double d = TimeDd(file);
    if (d < 0) {
      std::cerr << "dd failed\n";
      return 1;
    }
    best_dd = std::min(best_dd, d);
  }
  std::filesystem::remove_all(dir);
  double mb = static_cast<double>(mib) * 1.048576;
  std::printf("checksum_bench: %zu MiB file in page cache, best of %d\n", mib, reps);
  std::printf("  %-28s %10.0f MB/s\n", "belay Xxh3File", mb / best_hash);
  std::printf("  %-28s %10.0f MB/s\n", "dd bs=1M of=/dev/null", mb / best_dd);
  std::printf("  ratio belay/dd              %10.2f\n", best_dd / best_hash);
  return 0;
}
