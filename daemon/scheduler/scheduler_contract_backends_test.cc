// The Scheduler contract against the fake (in memory) and the local backend (real processes,
// several ranks under mpirun).
#include <memory>

#include "daemon/scheduler/fake_scheduler.h"
#include "daemon/scheduler/local_scheduler.h"
#include "daemon/scheduler/scheduler_contract_test.h"

namespace belay::sched {
namespace {

namespace fs = std::filesystem;

// The fake's jobs live in its object: a restarted belayd is the same object, and nothing runs,
// so ranks exit when the test says they do.
class FakeBackend final : public ContractBackend {
 public:
  Scheduler& scheduler() override { return fake_; }
  Scheduler& Restarted() override { return fake_; }
  pb::SchedulerKind kind() const override { return pb::SCHEDULER_KIND_LOCAL; }
  void RanksExit(const std::string& id, int exit_code) override { fake_.End(id, {}, exit_code); }
  std::string UnknownId() const override { return "fake-999999"; }
  bool writes_log_directory() const override { return false; }

 private:
  FakeScheduler fake_;
};

LocalSchedulerOptions LocalOptions(const fs::path& dir) {
  LocalSchedulerOptions o;
  o.jobs_dir = dir / "jobs";
  return o;
}

class LocalBackend final : public RebuiltBackend<LocalScheduler, LocalSchedulerOptions> {
 public:
  explicit LocalBackend(const fs::path& dir) : RebuiltBackend(LocalOptions(dir)) {}
  pb::SchedulerKind kind() const override { return pb::SCHEDULER_KIND_LOCAL; }
  std::string UnknownId() const override { return "999999-1"; }
  bool new_token_new_job() const override { return false; }
};

INSTANTIATE_TEST_SUITE_P(
    Backends, SchedulerContract,
    ::testing::Values(SchedulerContractParam{"Fake",
                                             [](const fs::path&, std::string*) {
                                               return std::unique_ptr<ContractBackend>(
                                                   new FakeBackend);
                                             }},
                      SchedulerContractParam{"Local",
                                             [](const fs::path& dir, std::string*) {
                                               return std::unique_ptr<ContractBackend>(
                                                   new LocalBackend(dir));
                                             }}),
    SchedulerContractParamName);

}  // namespace
}  // namespace belay::sched
