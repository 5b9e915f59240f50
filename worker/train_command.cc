// `belay-worker train`: standalone training without belayd, one JSON object per step on
// stdout, logs on stderr.
#include "worker/train_command.h"

#include <charconv>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <vector>

#include "common/campaign_spec.h"
#include "common/checksum.h"
#include "common/ckpt/layout.h"
#include "common/duration.h"
#include "common/strings.h"
#include "kernels/device.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"
#include "worker/comm/mpi_communicator.h"
#include "worker/comm/nccl.h"
#include "worker/comm/single_communicator.h"
#include "worker/runtime/coordinator_client.h"
#include "worker/runtime/rank_env.h"
#include "worker/train/checkpoint_interval.h"
#include "worker/train/trainer.h"

namespace belay::worker {
namespace {

volatile std::sig_atomic_t g_stop_signal = 0;

void OnStopSignal(int sig) { g_stop_signal = sig; }

// --mtbf: a duration ("4h", "1h30m") or a number of seconds above zero ("0.5").
absl::StatusOr<double> ParseMtbf(const std::string& text) {
  double seconds = 0;
  const char* end = text.data() + text.size();
  auto [at, ec] = std::from_chars(text.data(), end, seconds);
  if (ec != std::errc() || at != end) {
    absl::StatusOr<std::chrono::seconds> d = ParseDuration(text);
    if (!d.ok())
      return absl::InvalidArgumentError(
          Cat("\"", text, "\" is neither a duration nor a number of seconds"));
    seconds = static_cast<double>(d->count());
  }
  if (!(seconds > 0) || !std::isfinite(seconds))
    return absl::InvalidArgumentError(Cat("\"", text, "\" must be above zero"));
  return seconds;
}

// Seconds on the monotonic clock.
double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void PrintStep(const train::StepMetrics& m) {
  nlohmann::json j = {{"step", m.step},
                      {"loss", m.loss},
                      {"lr", m.lr},
                      {"grad_norm", m.grad_norm},
                      {"tokens_per_s", m.tokens_per_s},
                      {"goldfish_dropped", m.goldfish_dropped},
                      {"tokens", m.tokens},
                      {"data_digest", FormatXxh3(m.data_digest)},
                      {"comm_bytes", m.comm_bytes}};
  std::cout << j.dump() << std::endl;
}

v1::StepMetrics ToProto(const train::StepMetrics& m) {
  v1::StepMetrics p;
  p.set_step(m.step);
  p.set_loss(m.loss);
  p.set_lr(m.lr);
  p.set_grad_norm(m.grad_norm);
  p.set_tokens_per_s(m.tokens_per_s);
  p.set_step_time_s(m.step_time_s);
  p.set_goldfish_dropped_fraction(m.goldfish_dropped);
  p.set_tokens_seen(m.tokens);
  for (double t : m.rank_step_time_s) p.add_rank_step_time_s(t);
  for (double t : m.rank_compute_time_s) p.add_rank_compute_time_s(t);
  return p;
}

// `blocked_s`: how long the save held this rank's training up.
v1::CheckpointShard ShardProto(const train::CheckpointInfo& c, int rank, double blocked_s) {
  v1::CheckpointShard s;
  s.set_blocked_time_s(blocked_s);
  s.set_step(c.step);
  s.set_rank(rank);
  s.set_path((c.step_dir / ckpt::ShardFileName(rank)).string());
  s.set_bytes(c.bytes);
  s.set_xxh3(c.xxh3);
  s.set_tensor_count(static_cast<int32_t>(c.slices.size()));
  for (const train::CheckpointInfo::Slice& x : c.slices) {
    v1::TensorSlice* t = s.add_tensors();
    t->set_name(x.name);
    t->set_dtype("f32");
    t->add_shape(static_cast<int64_t>(x.total));
    t->set_element_offset(static_cast<int64_t>(x.offset));
    t->set_element_count(static_cast<int64_t>(x.count));
  }
  return s;
}

// What each rank holds, gathered to rank 0 and printed there as one JSON line:
// {"event": "memory", "world_size": W, "zero_stage": s, "param_bytes": [...], ...}.
absl::Status PrintMemory(const train::Trainer& trainer, comm::Communicator& comm) {
  const train::MemoryAccounting m = trainer.memory();
  const int64_t mine[3] = {m.params, m.gradients, m.optimizer};
  std::vector<int64_t> all(static_cast<size_t>(3 * comm.world_size()));
  if (absl::Status s = comm.AllGatherInt64(mine, all); !s.ok()) return s;
  if (comm.rank() != 0) return absl::OkStatus();
  nlohmann::json j = {{"event", "memory"},
                      {"world_size", comm.world_size()},
                      {"zero_stage", trainer.spec().train.zero_stage},
                      {"device", trainer.device() == train::Device::kCuda ? "cuda" : "cpu"},
                      {"shard_elements", trainer.plan().shard_size()},
                      {"param_elements", trainer.params().size()}};
  const char* keys[] = {"param_bytes", "gradient_bytes", "optimizer_bytes"};
  for (size_t k = 0; k < 3; ++k) {
    nlohmann::json per_rank = nlohmann::json::array();
    for (int r = 0; r < comm.world_size(); ++r)
      per_rank.push_back(all[static_cast<size_t>(3 * r) + k]);
    j[keys[k]] = per_rank;
  }
  std::cout << j.dump() << std::endl;
  return absl::OkStatus();
}

// This process's place in the job, and the communicator that connects it to the others:
// MPI between CPU ranks, NCCL between GPU ranks, none for a single rank.
struct World {
  std::shared_ptr<comm::MpiSession> session;
  std::unique_ptr<comm::Communicator> comm;
};

absl::StatusOr<std::unique_ptr<comm::MpiCommunicator>> JoinMpi(const runtime::RankInfo& info,
                                                               World& w) {
  absl::StatusOr<std::shared_ptr<comm::MpiSession>> session = comm::MpiSession::Start();
  if (!session.ok()) return session.status();
  w.session = *session;
  absl::StatusOr<std::unique_ptr<comm::MpiCommunicator>> mpi =
      comm::MpiCommunicator::Create(w.session);
  if (!mpi.ok()) return mpi.status();
  if ((*mpi)->rank() != info.rank || (*mpi)->world_size() != info.world_size) {
    return absl::FailedPreconditionError(
        Cat("MPI says rank ", (*mpi)->rank(), " of ", (*mpi)->world_size(), ", the launcher's ",
            runtime::RankSourceName(info.source), " variables say rank ", info.rank, " of ",
            info.world_size));
  }
  return mpi;
}

// The device from --device: "auto" trains on GPUs when the campaign asks for them.
absl::StatusOr<train::Device> DeviceOf(const std::string& flag, const CampaignSpec& spec) {
  if (flag == "cpu") return train::Device::kCpu;
  if (flag == "cuda") return train::Device::kCuda;
  if (flag == "auto")
    return spec.resources.gpus_per_node > 0 ? train::Device::kCuda : train::Device::kCpu;
  return absl::InvalidArgumentError(Cat("--device ", flag, ": want cpu, cuda or auto"));
}

absl::StatusOr<World> JoinWorld(const runtime::RankInfo& info, train::Device device,
                                runtime::CoordinatorClient* link) {
  World w;
  if (device == train::Device::kCuda) {
    // This rank's GPU, by its local rank (runtime::ChooseCudaDevice).
    absl::StatusOr<std::vector<kernels::CudaDevice>> devices = kernels::ListCudaDevices();
    if (!devices.ok()) {
      return absl::FailedPreconditionError(
          Cat("asked to train on a GPU: ", devices.status().message()));
    }
    absl::StatusOr<int> index = runtime::ChooseCudaDevice(info, static_cast<int>(devices->size()));
    if (!index.ok()) return index.status();
    if (absl::Status s = kernels::UseCudaDevice(*index); !s.ok()) return s;
    const kernels::CudaDevice& d = (*devices)[static_cast<size_t>(*index)];
    spdlog::info("rank {} (local rank {}) on GPU {} of {}: {}, {:.0f} GiB", info.rank,
                 info.local_rank, *index, devices->size(), d.name,
                 static_cast<double>(d.memory_bytes) / (1 << 30));
  }
  if (info.world_size == 1 && device == train::Device::kCpu) {
    w.comm = std::make_unique<comm::SingleCommunicator>();
    return w;
  }
  if (device == train::Device::kCpu) {
    absl::StatusOr<std::unique_ptr<comm::MpiCommunicator>> mpi = JoinMpi(info, w);
    if (!mpi.ok()) return mpi.status();
    w.comm = std::move(*mpi);
    return w;
  }
  // GPU ranks: NCCL (also for one rank: the trainer's collectives then take device memory),
  // whose id rank 0 makes and hands to the others over mpirun's MPI or belayd's rendezvous.
  std::string id;
  if (info.rank == 0) {
    absl::StatusOr<std::string> made = comm::NewNcclId();
    if (!made.ok()) return made.status();
    id = std::move(*made);
  }
  if (info.world_size > 1 && info.source == runtime::RankSource::kMpirun) {
    absl::StatusOr<std::unique_ptr<comm::MpiCommunicator>> mpi = JoinMpi(info, w);
    if (!mpi.ok()) return mpi.status();
    id.resize(comm::kNcclIdBytes);
    if (absl::Status s =
            (*mpi)->Broadcast(std::as_writable_bytes(std::span(id.data(), id.size())), 0);
        !s.ok()) {
      return s;
    }
  } else if (info.world_size > 1 && link != nullptr) {
    absl::StatusOr<std::string> met = link->Rendezvous("nccl", 1, id, std::chrono::minutes(10));
    if (!met.ok()) return met.status();
    id = std::move(*met);
  } else if (info.world_size > 1) {
    return absl::FailedPreconditionError(Cat(
        info.world_size, " ranks on GPUs (started by ", runtime::RankSourceName(info.source),
        "): the NCCL id goes from rank 0 to the others over mpirun's MPI or belayd's rendezvous; "
        "start the ranks with mpirun or under belayd"));
  }
  absl::StatusOr<std::unique_ptr<comm::Communicator>> nccl =
      comm::CreateNcclCommunicator(id, info.rank, info.world_size);
  if (!nccl.ok()) return nccl.status();
  w.comm = std::move(*nccl);
  return w;
}

int Run(const TrainOptions& o) {
  absl::StatusOr<runtime::RankInfo> info =
      runtime::RankInfoFromEnvironment(runtime::ProcessEnvironment());
  if (!info.ok()) {
    spdlog::error("{}", std::string(info.status().message()));
    return 1;
  }
  const bool lead = info->rank == 0;  // prints the JSON lines
  // Under belayd: the worker link (null when run standalone).
  std::unique_ptr<runtime::CoordinatorClient> link =
      runtime::CoordinatorClient::FromEnvironment(info->rank, info->world_size);
  TrainOptions opts = o;
  if (o.resume_from_coordinator) {
    // Nothing to train from without belayd's answer; a presubmitted job may also start before
    // belayd hands it to its attempt (it answers "unavailable" until then).
    if (!link) {
      spdlog::error("--resume-from-coordinator needs belayd (BELAY_COORDINATOR and BELAY_TOKEN)");
      return 1;
    }
    if (absl::Status s = link->Register(std::chrono::minutes(10)); !s.ok()) {
      spdlog::error("cannot learn the checkpoint to resume from: {}", std::string(s.message()));
      return 1;
    }
    if (link->registration().has_resume_checkpoint())
      opts.resume = link->registration().resume_checkpoint().dir();
  } else if (link) {
    link->Register(std::chrono::seconds(20)).IgnoreError();  // logged; training goes on
  }
  // Errors every rank agrees on are logged once, by rank 0, and told to belayd by every rank.
  auto fail = [&](const std::string& what, v1::EndReason reason = v1::END_REASON_UNSPECIFIED,
                  int code = 1) {
    if (lead) spdlog::error("{}", what);
    if (link)
      link->Finish(v1::EXIT_KIND_ERROR, reason, what, 0, std::chrono::seconds(10)).IgnoreError();
    return code;
  };

  SpecParseResult parsed = LoadCampaignSpec(o.spec_file);
  if (!parsed.ok()) {
    std::string all;
    for (const SpecError& e : parsed.errors) all += e.ToString() + "\n";
    std::cerr << all;
    return fail(all, v1::END_REASON_BAD_SPEC, 2);
  }
  CampaignSpec spec = std::move(*parsed.spec);
  if (!o.out.empty()) spec.checkpoint.dir = std::filesystem::absolute(o.out).lexically_normal();
  const int64_t last = o.steps > 0 ? o.steps : spec.total_steps();

  absl::StatusOr<train::Device> device = DeviceOf(o.device, spec);
  if (!device.ok())
    return fail(std::string(device.status().message()), v1::END_REASON_UNSPECIFIED, 2);
  // Errors joining differ per rank: each rank says its own.
  absl::StatusOr<World> world = JoinWorld(*info, *device, link.get());
  if (!world.ok()) {
    const std::string what = Cat("rank ", info->rank, ": ", world.status().message());
    spdlog::error("{}", what);
    if (link)
      link->Finish(v1::EXIT_KIND_ERROR, v1::END_REASON_UNSPECIFIED, what, 0,
                   std::chrono::seconds(10))
          .IgnoreError();
    return 1;
  }
  comm::Communicator& comm = *world->comm;

  absl::StatusOr<std::unique_ptr<train::Trainer>> created =
      train::Trainer::Create(spec, comm, *device);
  if (!created.ok()) {
    const absl::StatusCode code = created.status().code();
    const v1::EndReason reason = code == absl::StatusCode::kNotFound ? v1::END_REASON_MISSING_DATA
                                 : code == absl::StatusCode::kInvalidArgument
                                     ? v1::END_REASON_BAD_SPEC
                                     : v1::END_REASON_UNSPECIFIED;
    return fail(std::string(created.status().message()), reason);
  }
  train::Trainer& trainer = **created;
  if (lead) {
    spdlog::info("rank 0 of {} on {}, ZeRO stage {}, {} micro-batches of {} per rank per step",
                 comm.world_size(),
                 trainer.gpu() != nullptr ? Cat("GPUs (", trainer.gpu()->attention(), " attention)")
                                          : "CPUs",
                 spec.train.zero_stage, trainer.grad_accum_steps(), spec.train.micro_batch);
  }
  if (!opts.resume.empty()) {
    absl::Status s = trainer.Resume(opts.resume);
    if (!s.ok()) return fail(Cat("cannot resume from ", opts.resume, ": ", s.message()));
    if (lead) spdlog::info("resumed from {} at step {}", opts.resume, trainer.step());
  }
  if (absl::Status s = PrintMemory(trainer, comm); !s.ok()) return fail(std::string(s.message()));
  if (link) {
    link->SetPhaseSource([&trainer] {
      switch (trainer.phase()) {
        case train::Phase::kData:
          return v1::WORKER_PHASE_DATA;
        case train::Phase::kForward:
          return v1::WORKER_PHASE_FORWARD;
        case train::Phase::kBackward:
          return v1::WORKER_PHASE_BACKWARD;
        case train::Phase::kCollective:
          return v1::WORKER_PHASE_COLLECTIVE;
        case train::Phase::kOptimizer:
          return v1::WORKER_PHASE_OPTIMIZER;
        case train::Phase::kEval:
          return v1::WORKER_PHASE_EVAL;
        case train::Phase::kCheckpoint:
          return v1::WORKER_PHASE_CHECKPOINT;
      }
      return v1::WORKER_PHASE_UNSPECIFIED;
    });
  }
  // Leftovers of saves interrupted by an earlier attempt (temporary step directories).
  if (lead) {
    absl::StatusOr<std::vector<std::filesystem::path>> removed =
        ckpt::RemoveIncomplete(spec.checkpoint.dir, spec.campaign.name);
    if (removed.ok()) {
      for (const auto& p : *removed)
        spdlog::info("removed the leftover of an interrupted save: {}", p.string());
    }
  }

  // SIGUSR1 (Slurm's pre-limit signal) and SIGTERM: finish the current step, checkpoint, exit.
  std::signal(SIGUSR1, OnStopSignal);
  std::signal(SIGTERM, OnStopSignal);

  const std::optional<int64_t> every = spec.checkpoint.every_steps;
  // checkpoint.every_steps = "auto": rank 0 times the steps and the saves and decides by the
  // Young/Daly rule (checkpoint_interval.h); every rank follows its decision (one all-reduce a
  // step), so all save the same step. Steps that are multiples of keep_every are saved too.
  std::optional<train::AutoCheckpointClock> auto_clock;
  if (!every) {
    absl::StatusOr<double> mtbf = ParseMtbf(opts.mtbf);
    if (!mtbf.ok()) return fail(Cat("--mtbf / BELAY_CHECKPOINT_MTBF: ", mtbf.status().message()));
    auto_clock.emplace(*mtbf, Now());
    if (lead) {
      spdlog::info(
          "checkpoint.every_steps = auto: saving by the Young/Daly rule for a failure every {} s",
          *mtbf);
    }
  }
  auto save_due = [&](int64_t step) {
    if (every) return step % *every == 0;
    int64_t due = lead && auto_clock->Due(Now()) ? 1 : 0;
    if (spec.checkpoint.keep_every > 0 && step % spec.checkpoint.keep_every == 0) due = 1;
    if (absl::Status s = comm.AllReduceSumInt64(std::span(&due, 1)); !s.ok()) {
      spdlog::critical("all-reduce of the save decision failed: {}", std::string(s.message()));
      std::abort();
    }
    return due > 0;
  };
  // Under belayd the ranks write and report their shards; belayd commits (docs/checkpoints.md).
  const train::SaveMode save_mode = link ? train::SaveMode::kShardsOnly : train::SaveMode::kCommit;
  train::StepMetrics m;
  int64_t saved_at = trainer.step();
  // A signal may reach the ranks at different steps: they stop together, at the first step
  // after which any of them has seen one.
  auto stop_requested = [&]() {
    int64_t stop = g_stop_signal != 0 ? 1 : 0;
    absl::Status s = comm.AllReduceSumInt64(std::span(&stop, 1));
    if (!s.ok()) {
      spdlog::critical("all-reduce of the stop flag failed: {}", std::string(s.message()));
      std::abort();
    }
    return stop > 0;
  };
  // Fault injection for tests: BELAY_FAULT_NAN_AT_STEP=N makes step N's loss NaN, in the attempt
  // BELAY_FAULT_ATTEMPT names (default 1) when run under belayd.
  int64_t nan_at = 0;
  if (const char* v = std::getenv("BELAY_FAULT_NAN_AT_STEP"); v != nullptr) {
    const char* want = std::getenv("BELAY_FAULT_ATTEMPT");
    const char* attempt = std::getenv("BELAY_ATTEMPT");
    if (attempt == nullptr || std::string(attempt) == (want != nullptr ? want : "1"))
      nan_at = std::atoll(v);
  }
  // checkpoint.async: a save's shard is written by a thread of its own during the next
  // step, and the save completes (reported to belayd, or committed standalone) after that
  // step, at the same step on every rank. A failed save is reported and training goes on;
  // the previous checkpoint stands.
  std::unique_ptr<train::PendingSave> pending;
  double pending_at = 0, pending_cost = 0;  // when the pending save began, its cost so far
  // A save ended: `began` is when its state was taken, `cost` the seconds it held this rank's
  // training up (the auto interval's save cost; reported with the shard for the goodput
  // ledger).
  auto saved = [&](const absl::StatusOr<train::CheckpointInfo>& c, const train::StepMetrics& at,
                   double began, double cost) {
    if (auto_clock) {
      auto_clock->Saved(began, cost);
      if (lead) {
        spdlog::info(
            "checkpoint.every_steps = auto: the save held training up {:.3f} s; next save {:.0f} s "
            "after it",
            cost, auto_clock->interval_s().value_or(0));
      }
    }
    if (!c.ok()) {
      if (lead)
        spdlog::error("checkpoint at step {} failed: {}", at.step,
                      std::string(c.status().message()));
      if (link && lead) link->ReportSaveFailure(at.step, std::string(c.status().message()));
      return;
    }
    saved_at = at.step;
    if (lead) spdlog::info("checkpoint step {}: {}", c->step, c->step_dir.string());
    if (link)
      link->ReportShard(ShardProto(*c, comm.rank(), cost),
                        lead ? std::optional(ToProto(at)) : std::nullopt);
  };
  auto finish_pending = [&] {
    if (!pending) return;
    const double t0 = Now();
    absl::StatusOr<train::CheckpointInfo> c = trainer.FinishSave(*pending);
    const double cost = pending_cost + (Now() - t0);
    const train::StepMetrics at = pending->last;
    pending.reset();
    saved(c, at, pending_at, cost);
  };
  while (trainer.step() < last && !stop_requested()) {
    if (nan_at > 0 && trainer.step() + 1 == nan_at) {
      spdlog::warn("fault injection: step {} will have a non-finite loss", nan_at);
      trainer.PoisonParametersForTesting();
    }
    m = trainer.TrainStep();
    if (auto_clock) auto_clock->StepEnded(Now());
    if (lead) PrintStep(m);
    if (link) {
      link->SetPosition(m.step, v1::WORKER_PHASE_DATA);
      if (lead) link->ReportStep(ToProto(m));
    }
    finish_pending();
    if (spec.train.eval_every > 0 && m.step % spec.train.eval_every == 0) {
      const double val = trainer.Evaluate();
      if (lead)
        std::cout << nlohmann::json{{"step", m.step}, {"val_loss", val}}.dump() << std::endl;
      if (link && lead) {
        v1::EvalMetrics e;
        e.set_step(m.step);
        e.set_dataset("val");
        e.set_loss(val);
        link->ReportEval(e);
      }
    }
    if (save_due(m.step)) {
      const double t0 = Now();
      if (spec.checkpoint.async) {
        absl::StatusOr<std::unique_ptr<train::PendingSave>> begun =
            trainer.BeginSave(spec.checkpoint.dir, m, save_mode, /*background=*/true);
        if (begun.ok()) {
          pending = std::move(*begun);
          pending_at = t0;
          pending_cost = Now() - t0;
        } else {
          saved(begun.status(), m, t0, Now() - t0);
        }
      } else {
        absl::StatusOr<train::CheckpointInfo> c =
            trainer.SaveCheckpoint(spec.checkpoint.dir, m, save_mode);
        saved(c, m, t0, Now() - t0);
      }
    }
  }
  finish_pending();
  if (g_stop_signal != 0) spdlog::warn("signal {}: checkpointing and stopping", int{g_stop_signal});
  if (trainer.step() != saved_at) {
    const double t0 = Now();
    absl::StatusOr<train::CheckpointInfo> c =
        trainer.SaveCheckpoint(spec.checkpoint.dir, m, save_mode);
    if (!c.ok())
      return fail(
          Cat("final checkpoint at step ", trainer.step(), " failed: ", c.status().message()));
    saved(c, m, t0, Now() - t0);
  }
  if (link) {
    const v1::ExitKind kind = trainer.step() >= spec.total_steps() ? v1::EXIT_KIND_COMPLETED
                              : g_stop_signal == SIGUSR1 ? v1::EXIT_KIND_TIME_LIMIT_CHECKPOINTED
                                                         : v1::EXIT_KIND_STOPPED;
    link->Finish(kind, v1::END_REASON_UNSPECIFIED, "", trainer.step(), std::chrono::seconds(30))
        .IgnoreError();
  }
  return 0;
}

}  // namespace

void AddTrainCommand(CLI::App& app, int* exit_code) {
  auto opts = std::make_shared<TrainOptions>();
  CLI::App* cmd = app.add_subcommand(
      "train", "Train standalone (without belayd): one JSON object per step on stdout");
  cmd->add_option("--spec", opts->spec_file, "campaign file")->required();
  cmd->add_option("--steps", opts->steps,
                  "stop after this step (default: the campaign's total); the LR schedule still "
                  "follows the campaign's total")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--out", opts->out, "checkpoint root, instead of checkpoint.dir");
  cmd->add_option("--resume", opts->resume,
                  "checkpoint to resume from: a step directory, or a checkpoint root (its newest "
                  "committed step)");
  cmd->add_flag("--resume-from-coordinator", opts->resume_from_coordinator,
                "under belayd: resume from the checkpoint belayd names when the ranks register "
                "(for jobs queued before that checkpoint existed)")
      ->excludes("--resume");
  cmd->add_option(
         "--mtbf", opts->mtbf,
         "for checkpoint.every_steps = \"auto\": the mean time between failures to save for, "
         "a duration such as \"4h\" or seconds (belayd sets it from the campaign's history)")
      ->envname("BELAY_CHECKPOINT_MTBF")
      ->capture_default_str();
  cmd->add_option(
         "--device", opts->device,
         "cpu, cuda, or auto: cuda when the campaign asks for GPUs (resources.gpus_per_node); "
         "each rank takes the GPU of its local rank")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  cmd->callback([opts, exit_code] { *exit_code = Run(*opts); });
}

}  // namespace belay::worker
