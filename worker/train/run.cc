// Setting up one training rank: rank, worker link, campaign, communicator, trainer, resume.
#include "worker/train/run.h"

#include <chrono>
#include <filesystem>
#include <iostream>
#include <memory>
#include <vector>

#include "common/campaign_spec.h"
#include "common/ckpt/layout.h"
#include "common/strings.h"
#include "spdlog/spdlog.h"
#include "worker/runtime/coordinator_client.h"
#include "worker/runtime/rank_env.h"
#include "worker/train/reports.h"
#include "worker/train/trainer.h"
#include "worker/train/training_loop.h"
#include "worker/train/world.h"

namespace belay::train {
namespace {

// The device from --device: "auto" trains on GPUs when the campaign asks for them.
absl::StatusOr<Device> DeviceOf(const std::string& flag, const CampaignSpec& spec) {
  if (flag == "cpu") return Device::kCpu;
  if (flag == "cuda") return Device::kCuda;
  if (flag == "auto") return spec.resources.gpus_per_node > 0 ? Device::kCuda : Device::kCpu;
  return absl::InvalidArgumentError(Cat("--device ", flag, ": want cpu, cuda or auto"));
}

// Registers with belayd (when under it), and learns the checkpoint to resume from when asked
// to: false when that fails (logged).
bool Register(runtime::CoordinatorClient* link, RunOptions& o) {
  if (!o.resume_from_coordinator) {
    if (link) link->Register(std::chrono::seconds(20)).IgnoreError();  // logged; training goes on
    return true;
  }
  // Nothing to train from without belayd's answer; a presubmitted job may also start before
  // belayd hands it to its attempt (it answers "unavailable" until then).
  if (!link) {
    spdlog::error("--resume-from-coordinator needs belayd (BELAY_COORDINATOR and BELAY_TOKEN)");
    return false;
  }
  if (absl::Status s = link->Register(std::chrono::minutes(10)); !s.ok()) {
    spdlog::error("cannot learn the checkpoint to resume from: {}", std::string(s.message()));
    return false;
  }
  if (link->registration().has_resume_checkpoint())
    o.resume = link->registration().resume_checkpoint().dir();
  return true;
}

// The end reason belayd is told when the trainer cannot be created.
v1::EndReason CreateFailureReason(const absl::Status& s) {
  if (s.code() == absl::StatusCode::kNotFound) return v1::END_REASON_MISSING_DATA;
  if (s.code() == absl::StatusCode::kInvalidArgument) return v1::END_REASON_BAD_SPEC;
  return v1::END_REASON_UNSPECIFIED;
}

// After the trainer is ready: the resume, the memory line, heartbeats' phases, the leftovers
// of interrupted saves, then the loop.
int Train(Trainer& trainer, comm::Communicator& comm, runtime::CoordinatorClient* link,
          const RunOptions& o, int64_t last) {
  const bool lead = comm.rank() == 0;
  const CampaignSpec& spec = trainer.spec();
  if (!o.resume.empty()) {
    absl::Status s = trainer.Resume(o.resume);
    if (!s.ok()) return Fail(lead, link, Cat("cannot resume from ", o.resume, ": ", s.message()));
    if (lead) spdlog::info("resumed from {} at step {}", o.resume, trainer.step());
  }
  if (absl::Status s = PrintMemory(trainer, comm); !s.ok())
    return Fail(lead, link, std::string(s.message()));
  if (link) link->SetPhaseSource([&trainer] { return PhaseProto(trainer.phase()); });
  // Leftovers of saves interrupted by an earlier attempt (temporary step directories).
  if (lead) {
    absl::StatusOr<std::vector<std::filesystem::path>> removed =
        ckpt::RemoveIncomplete(spec.checkpoint.dir, spec.campaign.name);
    if (removed.ok()) {
      for (const auto& p : *removed)
        spdlog::info("removed the leftover of an interrupted save: {}", p.string());
    }
  }
  TrainingLoop::CatchStopSignals();
  double mtbf_s = 0;
  if (!spec.checkpoint.every_steps) {
    if (!o.mtbf_s.ok())
      return Fail(lead, link, Cat("--mtbf / BELAY_CHECKPOINT_MTBF: ", o.mtbf_s.status().message()));
    mtbf_s = *o.mtbf_s;
    if (lead) {
      spdlog::info(
          "checkpoint.every_steps = auto: saving by the Young/Daly rule for a failure every {} s",
          mtbf_s);
    }
  }
  return TrainingLoop(trainer, comm, link, last, mtbf_s).Run();
}

}  // namespace

int RunTraining(const RunOptions& options) {
  absl::StatusOr<runtime::RankInfo> info =
      runtime::RankInfoFromEnvironment(runtime::ProcessEnvironment());
  if (!info.ok()) {
    spdlog::error("{}", std::string(info.status().message()));
    return 1;
  }
  const bool lead = info->rank == 0;
  // Under belayd: the worker link (null when run standalone).
  std::unique_ptr<runtime::CoordinatorClient> link =
      runtime::CoordinatorClient::FromEnvironment(info->rank, info->world_size);
  RunOptions o = options;
  if (!Register(link.get(), o)) return 1;

  SpecParseResult parsed = LoadCampaignSpec(o.spec_file);
  if (!parsed.ok()) {
    std::string all;
    for (const SpecError& e : parsed.errors) all += e.ToString() + "\n";
    std::cerr << all;
    return Fail(lead, link.get(), all, v1::END_REASON_BAD_SPEC, 2);
  }
  CampaignSpec spec = std::move(*parsed.spec);
  if (!o.out.empty()) spec.checkpoint.dir = std::filesystem::absolute(o.out).lexically_normal();
  const int64_t last = o.steps > 0 ? o.steps : spec.total_steps();

  absl::StatusOr<Device> device = DeviceOf(o.device, spec);
  if (!device.ok())
    return Fail(lead, link.get(), std::string(device.status().message()),
                v1::END_REASON_UNSPECIFIED, 2);
  // Errors joining differ per rank: each rank says its own.
  absl::StatusOr<World> world = JoinWorld(*info, *device, link.get());
  if (!world.ok()) {
    return Fail(/*lead=*/true, link.get(),
                Cat("rank ", info->rank, ": ", world.status().message()));
  }
  comm::Communicator& comm = *world->comm;

  absl::StatusOr<std::unique_ptr<Trainer>> created = Trainer::Create(spec, comm, *device);
  if (!created.ok()) {
    return Fail(lead, link.get(), std::string(created.status().message()),
                CreateFailureReason(created.status()));
  }
  Trainer& trainer = **created;
  if (lead) {
    spdlog::info("rank 0 of {} on {}, ZeRO stage {}, {} micro-batches of {} per rank per step",
                 comm.world_size(),
                 trainer.gpu() != nullptr ? Cat("GPUs (", trainer.gpu()->attention(), " attention)")
                                          : "CPUs",
                 spec.train.zero_stage, trainer.grad_accum_steps(), spec.train.micro_batch);
  }
  return Train(trainer, comm, link.get(), o, last);
}

}  // namespace belay::train
