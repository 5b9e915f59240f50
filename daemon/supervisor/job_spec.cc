// BuildJobSpec: campaign and attempt records in, a scheduler's JobSpec out.
#include "daemon/supervisor/job_spec.h"

#include "common/ckpt/layout.h"
#include "common/duration.h"

namespace belay::supervisor {

sched::JobSpec BuildJobSpec(const WorkerSettings& w, const pb::Campaign& c, const pb::Attempt& a,
                            const CampaignSpec& spec, const JobRequest& r) {
  sched::JobSpec job;
  job.campaign_id = c.id();
  job.attempt = r.number;
  job.world_size = a.world_size();
  job.ranks_per_node = a.ranks_per_node();
  job.log_dir = r.log_dir;
  job.files = {{"campaign.toml", FormatCampaignSpec(spec)}};
  job.command = {w.worker_program, "--log-level", "info",
                 "train",          "--spec",      (job.log_dir / "campaign.toml").string()};
  if (r.resume_from_coordinator) {
    job.command.push_back("--resume-from-coordinator");
  } else if (a.has_start_checkpoint_step()) {
    job.command.push_back("--resume");
    job.command.push_back(
        ckpt::StepDir(spec.checkpoint.dir, c.id(), a.start_checkpoint_step()).string());
  }
  job.env = {{"BELAY_CAMPAIGN", c.id()},
             {"BELAY_ATTEMPT", std::to_string(r.number)},
             {"BELAY_TOKEN", r.token}};
  if (!w.coordinator_address.empty())
    job.env.push_back({"BELAY_COORDINATOR", w.coordinator_address});
  if (!w.coordinator_ca_pem.empty()) {
    job.files.emplace_back("coordinator-ca.pem", w.coordinator_ca_pem);
    job.env.push_back({"BELAY_COORDINATOR_CA", (job.log_dir / "coordinator-ca.pem").string()});
    if (!w.coordinator_tls_name.empty()) {
      job.env.push_back({"BELAY_COORDINATOR_TLS_NAME", w.coordinator_tls_name});
    }
  }
  if (r.mtbf) job.env.push_back({"BELAY_CHECKPOINT_MTBF", FormatDuration(*r.mtbf)});
  if (spec.resources.time_limit) job.time_limit = *spec.resources.time_limit;
  for (const std::string& n : a.excluded_nodes()) job.exclude_nodes.push_back(n);
  job.kind = c.scheduler();
  job.partition = spec.resources.partition;
  job.account = spec.resources.account;
  job.sbatch_options = spec.resources.sbatch_options;
  job.pre_limit_signal = spec.resources.pre_limit_signal;
  job.gpus_per_node = static_cast<int>(spec.resources.gpus_per_node);
  if (w.run_as_owner) job.run_as_uid = c.owner_uid();
  return job;
}

}  // namespace belay::supervisor
