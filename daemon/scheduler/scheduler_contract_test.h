// The contract every Scheduler implementation meets (scheduler.h), as value-parameterized
// tests: a test binary instantiates SchedulerContract with the backends it can reach (the fake
// and the local processes in scheduler_contract_test; Slurm on the local cluster in
// slurm_scheduler_test, label slurm).
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "daemon/scheduler/scheduler.h"
#include "gtest/gtest.h"

namespace belay::sched {

// One backend as the contract drives it.
class ContractBackend {
 public:
  virtual ~ContractBackend() = default;
  // The scheduler under test: one object, as one belayd holds it.
  virtual Scheduler& scheduler() = 0;
  // A second Scheduler object with the same configuration, as a restarted belayd builds it.
  virtual Scheduler& Restarted() = 0;
  // What the scheduler's kind() says.
  virtual pb::SchedulerKind kind() const = 0;
  // Called when every rank of job `id` has been started with a command that exits with
  // `exit_code` by itself: a real backend's ranks do; the fake ends the job as they would.
  virtual void RanksExit(const std::string& id, int exit_code) {
    (void)id;
    (void)exit_code;
  }
  // An id this scheduler never gave out, in its own format.
  virtual std::string UnknownId() const = 0;
  // Whether Submit prepares the log directory (PrepareLogDirectory); the fake runs nothing
  // and writes nothing.
  virtual bool writes_log_directory() const { return true; }
  // Whether the same attempt submitted with a new BELAY_TOKEN gets a job of its own, as
  // scheduler.h promises for an attempt whose presubmitted job was given up. The local backend
  // keys its jobs by (campaign, attempt) only; it refuses presubmission (after_job), the case
  // scheduler.h names.
  virtual bool new_token_new_job() const { return true; }
  // How long a job may take to start or to end after its ranks did (Slurm polls slurmctld).
  virtual std::chrono::seconds patience() const { return std::chrono::seconds(30); }
  // The world size of the contract's multi-rank jobs and their ranks per node.
  virtual int world_size() const { return 2; }
  virtual int ranks_per_node() const { return 2; }
};

// A backend whose scheduler is built from options S(Options): a restarted belayd is a second
// object built from the same options.
template <typename S, typename Options>
class RebuiltBackend : public ContractBackend {
 public:
  explicit RebuiltBackend(Options options)
      : options_(std::move(options)), first_(std::make_unique<S>(options_)) {}
  Scheduler& scheduler() override { return *first_; }
  Scheduler& Restarted() override {
    if (!second_) second_ = std::make_unique<S>(options_);
    return *second_;
  }

 private:
  Options options_;
  std::unique_ptr<S> first_, second_;
};

struct SchedulerContractParam {
  std::string name;
  // Builds the backend with its files under `dir` (created, removed after the test); nullptr
  // with `skip` set when the backend cannot run here (no Slurm cluster).
  std::function<std::unique_ptr<ContractBackend>(const std::filesystem::path& dir,
                                                 std::string* skip)>
      make;
};

class SchedulerContract : public ::testing::TestWithParam<SchedulerContractParam> {
 protected:
  void SetUp() override;
  void TearDown() override;

  // A job of this test's campaign: `world` ranks running `command` (default: the backend's
  // multi-rank world), its logs under the test's directory, BELAY_TOKEN `token`.
  JobSpec Job(int32_t attempt, std::vector<std::string> command, std::optional<int> world = {},
              const std::string& token = "t0k3n");
  // Submits through `s` (default: the backend's scheduler), failing the test on an error;
  // the job is killed after the test.
  std::string Submit(const JobSpec& job, Scheduler* s = nullptr);
  // Polls `id` until it is in `want` or has ended, for up to the backend's patience.
  JobStatus WaitFor(const std::string& id, JobState want, Scheduler* s = nullptr);
  // Submits `job`, whose ranks exit with `exit_code` by themselves (ExitsWith), and waits
  // until it has ended; its id in `*id`.
  JobStatus RunToEnd(const JobSpec& job, int exit_code, std::string* id);

  std::filesystem::path dir_;
  std::unique_ptr<ContractBackend> backend_;
  std::vector<std::string> started_;
};

std::string SchedulerContractParamName(
    const ::testing::TestParamInfo<SchedulerContractParam>& info);
void PrintTo(const SchedulerContractParam& param, std::ostream* os);

// A command whose ranks run until they are signalled, and one whose ranks exit with `code`.
std::vector<std::string> RunsUntilSignalled();
std::vector<std::string> ExitsWith(int code);

}  // namespace belay::sched
