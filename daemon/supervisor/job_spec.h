// The job an attempt runs as: the worker's command line, its environment (campaign,
// attempt, token, where belayd is), the files its ranks get, and what the scheduler is asked
// for. A pure function of the campaign, the attempt and belayd's settings.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include "belay/v1/types.pb.h"
#include "common/campaign_spec.h"
#include "daemon/scheduler/scheduler.h"

namespace belay::supervisor {

namespace pb = ::belay::v1;

// What belayd tells every job (SupervisorOptions).
struct WorkerSettings {
  std::string worker_program = "belay-worker";
  std::string coordinator_address;  // empty: workers run without reporting
  std::string coordinator_ca_pem;   // empty: a plaintext link
  std::string coordinator_tls_name;
  bool run_as_owner = false;
};

struct JobRequest {
  int32_t number = 0;                        // the attempt the job runs
  std::string token;                         // its workers' token
  std::filesystem::path log_dir;             // the attempt's directory (rank logs, the spec's copy)
  bool resume_from_coordinator = false;      // which checkpoint is decided when the job starts
  std::optional<std::chrono::seconds> mtbf;  // every_steps = "auto": the failure rate so far
};

// The job of attempt `r.number` of campaign `c` (its world size, exclusions and resume
// checkpoint from attempt record `a`, its resources from `spec`).
sched::JobSpec BuildJobSpec(const WorkerSettings& w, const pb::Campaign& c, const pb::Attempt& a,
                            const CampaignSpec& spec, const JobRequest& r);

}  // namespace belay::supervisor
