// Status agreement and rank-ordered sums over the communicator.
#include "worker/train/rank_agreement.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "common/strings.h"
#include "spdlog/spdlog.h"

namespace belay::train {

void CheckCollective(const absl::Status& s, std::string_view what) {
  if (s.ok()) return;
  spdlog::critical("{} failed: {}", what, std::string(s.message()));
  std::abort();
}

absl::Status AgreeOnStatus(comm::Communicator& comm, const absl::Status& local) {
  const int W = comm.world_size();
  if (W == 1) return local;
  // Fixed-size records: [code (1 byte)] [message, NUL-padded].
  constexpr size_t kRecord = 1024;
  std::vector<std::byte> mine(kRecord), all(kRecord * static_cast<size_t>(W));
  mine[0] = static_cast<std::byte>(static_cast<int>(local.code()));
  const std::string msg(local.message());
  std::memcpy(mine.data() + 1, msg.data(), std::min(msg.size(), kRecord - 2));
  CheckCollective(comm.AllGatherBytes(mine, all), "status exchange");
  for (int r = 0; r < W; ++r) {
    const std::byte* rec = all.data() + static_cast<size_t>(r) * kRecord;
    auto code = static_cast<absl::StatusCode>(static_cast<int>(rec[0]));
    if (code == absl::StatusCode::kOk) continue;
    const char* text = reinterpret_cast<const char*>(rec + 1);
    return absl::Status(code,
                        Cat("rank ", r, ": ", std::string_view(text, strnlen(text, kRecord - 1))));
  }
  return absl::OkStatus();
}

double SumOverRanks(comm::Communicator& comm, double local) {
  std::vector<double> all(static_cast<size_t>(comm.world_size()));
  CheckCollective(comm.AllGatherBytes(std::as_bytes(std::span(&local, 1)),
                                      std::as_writable_bytes(std::span(all))),
                  "all-gather");
  double sum = 0;
  for (double v : all) sum += v;
  return sum;
}

}  // namespace belay::train
