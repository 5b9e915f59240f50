// RankInfoFromEnvironment: reads, validates and reconciles the launchers' rank variables.
#include "worker/runtime/rank_env.h"

#include <array>
#include <charconv>
#include <cstdlib>
#include <utility>

#include "common/strings.h"

namespace belay::runtime {

std::string_view RankSourceName(RankSource source) {
  switch (source) {
    case RankSource::kSingle:
      return "single";
    case RankSource::kSlurm:
      return "Slurm";
    case RankSource::kMpirun:
      return "mpirun";
    case RankSource::kBelay:
      return "belay";
  }
  return "unknown";
}

Environment ProcessEnvironment() {
  return [](std::string_view name) -> std::optional<std::string> {
    const char* value = std::getenv(std::string(name).c_str());
    if (value == nullptr) return std::nullopt;
    return std::string(value);
  };
}

Environment MapEnvironment(std::map<std::string, std::string, std::less<>> variables) {
  return [variables = std::move(variables)](std::string_view name) -> std::optional<std::string> {
    auto it = variables.find(name);
    if (it == variables.end()) return std::nullopt;
    return it->second;
  };
}

namespace {

struct SourceVariables {
  RankSource source;
  std::string_view rank;
  std::string_view world_size;
  std::string_view local_rank;
};

constexpr std::array<SourceVariables, 3> kSources = {{
    {RankSource::kSlurm, "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"},
    {RankSource::kMpirun, "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
     "OMPI_COMM_WORLD_LOCAL_RANK"},
    {RankSource::kBelay, "BELAY_RANK", "BELAY_WORLD_SIZE", "BELAY_LOCAL_RANK"},
}};

// A non-negative int written in decimal digits only (no sign, space or empty string).
absl::StatusOr<int> ParseCount(std::string_view name, const std::optional<std::string>& value,
                               RankSource source) {
  if (!value.has_value()) {
    return absl::InvalidArgumentError(
        Cat(name, " is not set, but other ", RankSourceName(source), " rank variables are"));
  }
  int parsed = 0;
  const char* begin = value->data();
  const char* end = begin + value->size();
  const bool digits_only =
      !value->empty() && value->find_first_not_of("0123456789") == std::string::npos;
  auto [ptr, ec] = std::from_chars(begin, end, parsed);
  if (!digits_only || ec != std::errc() || ptr != end) {
    return absl::InvalidArgumentError(
        Cat(name, "='", *value,
            "' is not a non-negative integer (decimal digits, at most 2147483647)"));
  }
  return parsed;
}

// "Slurm (SLURM_PROCID=1, SLURM_NTASKS=4, SLURM_LOCALID=1)".
std::string Describe(const SourceVariables& vars, const RankInfo& info) {
  return Cat(RankSourceName(vars.source), " (", vars.rank, "=", info.rank, ", ", vars.world_size,
             "=", info.world_size, ", ", vars.local_rank, "=", info.local_rank, ")");
}

// The source's RankInfo, nullopt when none of its variables is set.
absl::StatusOr<std::optional<RankInfo>> ReadSource(const SourceVariables& vars,
                                                   const Environment& env) {
  const std::optional<std::string> rank = env(vars.rank);
  const std::optional<std::string> size = env(vars.world_size);
  const std::optional<std::string> local = env(vars.local_rank);
  if (!rank && !size && !local) return std::nullopt;
  absl::StatusOr<int> r = ParseCount(vars.rank, rank, vars.source);
  if (!r.ok()) return r.status();
  absl::StatusOr<int> w = ParseCount(vars.world_size, size, vars.source);
  if (!w.ok()) return w.status();
  absl::StatusOr<int> l = ParseCount(vars.local_rank, local, vars.source);
  if (!l.ok()) return l.status();
  if (*w < 1) {
    return absl::InvalidArgumentError(Cat(vars.world_size, "=", *w, " must be at least 1"));
  }
  if (*r >= *w) {
    return absl::InvalidArgumentError(
        Cat(vars.rank, "=", *r, " is not below ", vars.world_size, "=", *w));
  }
  if (*l >= *w) {
    return absl::InvalidArgumentError(
        Cat(vars.local_rank, "=", *l, " is not below ", vars.world_size, "=", *w));
  }
  return RankInfo{.rank = *r, .world_size = *w, .local_rank = *l, .source = vars.source};
}

}  // namespace

absl::StatusOr<RankInfo> RankInfoFromEnvironment(const Environment& env) {
  std::optional<RankInfo> chosen;
  const SourceVariables* chosen_vars = nullptr;
  // mpirun inside a Slurm allocation: the SLURM_* variables describe the step that started
  // mpirun's daemons, not this process; OMPI_COMM_WORLD_* do.
  const bool under_mpirun = env("OMPI_COMM_WORLD_RANK") || env("OMPI_COMM_WORLD_SIZE") ||
                            env("OMPI_COMM_WORLD_LOCAL_RANK");
  for (const SourceVariables& vars : kSources) {
    if (under_mpirun && vars.source == RankSource::kSlurm) continue;
    absl::StatusOr<std::optional<RankInfo>> info = ReadSource(vars, env);
    if (!info.ok()) return info.status();
    if (!info->has_value()) continue;
    const RankInfo& found = **info;
    if (!chosen.has_value()) {
      chosen = found;
      chosen_vars = &vars;
    } else if (found.rank != chosen->rank || found.world_size != chosen->world_size ||
               found.local_rank != chosen->local_rank) {
      return absl::InvalidArgumentError(
          Cat("the rank environment disagrees: ", Describe(*chosen_vars, *chosen), " but ",
              Describe(vars, found)));
    }
  }
  return chosen.value_or(RankInfo{});
}

absl::StatusOr<int> ChooseCudaDevice(const RankInfo& rank, int visible_devices) {
  if (visible_devices <= 0) {
    return absl::FailedPreconditionError(Cat("rank ", rank.rank, " sees no CUDA device"));
  }
  if (visible_devices == 1) return 0;
  if (rank.local_rank < visible_devices) return rank.local_rank;
  return absl::InvalidArgumentError(
      Cat("rank ", rank.rank, " is local rank ", rank.local_rank, " of its node, which has only ",
          visible_devices,
          " visible CUDA devices: start at most one rank per GPU (ranks_per_node <= "
          "gpus_per_node)"));
}

}  // namespace belay::runtime
