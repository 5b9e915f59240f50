// The Scheduler contract against Slurm on the local cluster (deploy/local-cluster, started by
// ctest's slurm.cluster fixture): two ranks on two virtual nodes under mpirun. Skips when
// SLURM_CONF names no cluster.
#include <cstdlib>
#include <memory>

#include "daemon/scheduler/mpi_sandbox.h"
#include "daemon/scheduler/scheduler_contract_test.h"
#include "daemon/scheduler/slurm_scheduler.h"

namespace belay::sched {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

SlurmSchedulerOptions SlurmOptions(std::string conf) {
  SlurmSchedulerOptions o;
  o.conf = std::move(conf);
  o.min_poll_interval = 200ms;
  o.mpi_env = MpiSandboxEnvironment(MpiSandbox::kNodes);  // ranks on several virtual nodes
  return o;
}

class SlurmBackend final : public RebuiltBackend<SlurmScheduler, SlurmSchedulerOptions> {
 public:
  explicit SlurmBackend(std::string conf) : RebuiltBackend(SlurmOptions(std::move(conf))) {}
  pb::SchedulerKind kind() const override { return pb::SCHEDULER_KIND_SLURM; }
  std::string UnknownId() const override { return "999999"; }
  std::chrono::seconds patience() const override { return 120s; }
  int ranks_per_node() const override { return 1; }  // a multi-rank job spans nodes
};

INSTANTIATE_TEST_SUITE_P(Backends, SchedulerContract,
                         ::testing::Values(SchedulerContractParam{
                             "Slurm",
                             [](const fs::path&,
                                std::string* skip) -> std::unique_ptr<ContractBackend> {
                               const char* conf = std::getenv("SLURM_CONF");
                               if (conf == nullptr || !fs::exists(conf)) {
                                 *skip = "SLURM_CONF names no cluster (ctest starts one)";
                                 return nullptr;
                               }
                               return std::make_unique<SlurmBackend>(conf);
                             }}),
                         SchedulerContractParamName);

}  // namespace
}  // namespace belay::sched
