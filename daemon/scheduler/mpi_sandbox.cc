// Reads scripts/mpi-sandbox.conf, which the build embeds as kMpiSandboxConf.
#include "daemon/scheduler/mpi_sandbox.h"

#include <cstdio>
#include <cstdlib>

#include "common/strings.h"
#include "daemon/scheduler/mpi_sandbox_conf.inc"  // generated: kMpiSandboxConf

namespace belay::sched {
namespace {

std::string_view Trim(std::string_view s) {
  const size_t first = s.find_first_not_of(" \t\r");
  if (first == std::string_view::npos) return {};
  return s.substr(first, s.find_last_not_of(" \t\r") - first + 1);
}

void Set(EnvironmentList& env, std::string key, std::string value) {
  for (auto& [k, v] : env) {
    if (k == key) {
      v = std::move(value);
      return;
    }
  }
  env.emplace_back(std::move(key), std::move(value));
}

}  // namespace

absl::StatusOr<EnvironmentList> ParseMpiSandboxConf(std::string_view text,
                                                    std::string_view profile) {
  EnvironmentList common, own;
  std::string section;
  bool found = false;
  int number = 0;
  while (!text.empty()) {
    const size_t end = text.find('\n');
    const std::string_view line = Trim(text.substr(0, end));
    text = end == std::string_view::npos ? std::string_view{} : text.substr(end + 1);
    ++number;
    if (line.empty() || line.front() == '#') continue;
    if (line.front() == '[' && line.back() == ']') {
      section = std::string(line.substr(1, line.size() - 2));
      found = found || section == profile;
      continue;
    }
    const size_t eq = line.find('=');
    if (eq == std::string_view::npos || eq == 0 || section.empty())
      return absl::InvalidArgumentError(
          Cat("line ", number, ": not KEY=VALUE in a [section]: ", line));
    std::string key(Trim(line.substr(0, eq)));
    std::string value(Trim(line.substr(eq + 1)));
    if (section == "common") Set(common, std::move(key), std::move(value));
    if (section == profile) Set(own, std::move(key), std::move(value));
  }
  if (!found || profile == "common") return absl::NotFoundError(Cat("no profile [", profile, "]"));
  for (auto& [k, v] : own) Set(common, std::move(k), std::move(v));
  return common;
}

EnvironmentList MpiSandboxEnvironment(MpiSandbox profile) {
  const std::string_view name = profile == MpiSandbox::kNodes ? "nodes" : "one-node";
  absl::StatusOr<EnvironmentList> env = ParseMpiSandboxConf(kMpiSandboxConf, name);
  if (!env.ok()) {
    std::fprintf(stderr, "scripts/mpi-sandbox.conf as built in: %s\n",
                 env.status().ToString().c_str());
    std::abort();
  }
  return *std::move(env);
}

}  // namespace belay::sched
