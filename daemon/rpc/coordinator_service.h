// The coordinator API (proto/belay/v1/coordinator.proto) the CLI talks to: thin handlers over
// the Supervisor and the store, with the caller's uid from the connection's peer credentials.
#pragma once

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "belay/v1/coordinator.grpc.pb.h"
#include "common/clock.h"
#include "daemon/rpc/peer_registry.h"
#include "daemon/store/store.h"
#include "daemon/supervisor/supervisor.h"

namespace belay::rpc {

struct DaemonFacts {
  std::string version;
  std::filesystem::path state_dir;
  std::string worker_listen_address;
  v1::SchedulerKind scheduler = v1::SCHEDULER_KIND_LOCAL;  // the default backend
  std::string slurm_conf;  // the Slurm cluster's slurm.conf; empty: none (slurm campaigns refused)
  TimePoint start_time;
  // Calls made to slurmctld so far, and the budget they are held to.
  std::function<sched::ControllerCalls()> slurm_calls;
  int slurm_rpc_budget_per_minute = 0;
};

// An ETA further off than this is not given (it would not be meaningful, and a time point
// that far out does not fit the clock's type).
inline constexpr double kMaxEtaSeconds = 100.0 * 365 * 24 * 3600;

// Fills p's tokens_per_s and step_time_s with the means over `recent` (the latest step
// reports) and, with steps_left > 0, the ETA and estimated end time from the mean step
// time; the ETA is left out where it is not finite or beyond kMaxEtaSeconds.
void SetRecentRates(const std::vector<v1::StepMetrics>& recent, int64_t steps_left, TimePoint now,
                    v1::Progress* p);

// Access: a caller is known only through the Unix socket (its uid); anything else is
// UNAUTHENTICATED. A user lists, reads and cancels only campaigns they own; uid 0 sees and
// changes all. Another user's campaign is NOT_FOUND, as if it did not exist.
class CoordinatorService final : public v1::Coordinator::Service {
 public:
  CoordinatorService(supervisor::Supervisor& supervisor, store::Store& store,
                     const PeerRegistry& peers, const Clock& clock, DaemonFacts facts)
      : supervisor_(supervisor),
        store_(store),
        peers_(peers),
        clock_(clock),
        facts_(std::move(facts)) {}

  grpc::Status SubmitCampaign(grpc::ServerContext*, const v1::SubmitCampaignRequest*,
                              v1::SubmitCampaignResponse*) override;
  grpc::Status ListCampaigns(grpc::ServerContext*, const v1::ListCampaignsRequest*,
                             v1::ListCampaignsResponse*) override;
  grpc::Status GetCampaign(grpc::ServerContext*, const v1::GetCampaignRequest*,
                           v1::GetCampaignResponse*) override;
  grpc::Status CancelCampaign(grpc::ServerContext*, const v1::CancelCampaignRequest*,
                              v1::CancelCampaignResponse*) override;
  grpc::Status WatchCampaign(grpc::ServerContext*, const v1::WatchCampaignRequest*,
                             grpc::ServerWriter<v1::WatchCampaignResponse>*) override;
  grpc::Status QueryMetrics(grpc::ServerContext*, const v1::QueryMetricsRequest*,
                            v1::QueryMetricsResponse*) override;
  grpc::Status ListEvents(grpc::ServerContext*, const v1::ListEventsRequest*,
                          v1::ListEventsResponse*) override;
  grpc::Status ListCheckpoints(grpc::ServerContext*, const v1::ListCheckpointsRequest*,
                               v1::ListCheckpointsResponse*) override;
  grpc::Status ListNodes(grpc::ServerContext*, const v1::ListNodesRequest*,
                         v1::ListNodesResponse*) override;
  grpc::Status GetLogs(grpc::ServerContext*, const v1::GetLogsRequest*,
                       v1::GetLogsResponse*) override;
  grpc::Status GetDaemonInfo(grpc::ServerContext*, const v1::GetDaemonInfoRequest*,
                             v1::GetDaemonInfoResponse*) override;

 private:
  // The caller's credentials, or UNAUTHENTICATED.
  absl::StatusOr<PeerCredentials> Caller(const grpc::ServerContext* ctx) const;
  // The campaign if the caller may see it; NOT_FOUND otherwise.
  absl::StatusOr<v1::Campaign> Visible(const grpc::ServerContext* ctx, const std::string& id) const;
  absl::StatusOr<v1::Progress> ProgressOf(const v1::Campaign& c) const;

  supervisor::Supervisor& supervisor_;
  store::Store& store_;
  const PeerRegistry& peers_;
  const Clock& clock_;
  DaemonFacts facts_;
};

}  // namespace belay::rpc
