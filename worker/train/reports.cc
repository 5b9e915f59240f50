// JSON lines and worker-link messages of a training rank.
#include "worker/train/reports.h"

#include <chrono>
#include <iostream>
#include <vector>

#include "common/checksum.h"
#include "common/ckpt/layout.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"

namespace belay::train {

void PrintStep(const StepMetrics& m) {
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

void PrintEval(int64_t step, double val_loss) {
  std::cout << nlohmann::json{{"step", step}, {"val_loss", val_loss}}.dump() << std::endl;
}

absl::Status PrintMemory(const Trainer& trainer, comm::Communicator& comm) {
  const MemoryAccounting m = trainer.memory();
  const int64_t mine[4] = {m.params, m.gradients, m.optimizer, m.activations};
  std::vector<int64_t> all(static_cast<size_t>(4 * comm.world_size()));
  if (absl::Status s = comm.AllGatherInt64(mine, all); !s.ok()) return s;
  if (comm.rank() != 0) return absl::OkStatus();
  nlohmann::json j = {{"event", "memory"},
                      {"world_size", comm.world_size()},
                      {"zero_stage", trainer.spec().train.zero_stage},
                      {"device", trainer.device() == Device::kCuda ? "cuda" : "cpu"},
                      {"shard_elements", trainer.plan().shard_size()},
                      {"param_elements", trainer.params().size()}};
  const char* keys[] = {"param_bytes", "gradient_bytes", "optimizer_bytes", "activation_bytes"};
  for (size_t k = 0; k < 4; ++k) {
    nlohmann::json per_rank = nlohmann::json::array();
    for (int r = 0; r < comm.world_size(); ++r)
      per_rank.push_back(all[static_cast<size_t>(4 * r) + k]);
    j[keys[k]] = per_rank;
  }
  std::cout << j.dump() << std::endl;
  return absl::OkStatus();
}

v1::StepMetrics StepProto(const StepMetrics& m) {
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

v1::CheckpointShard ShardProto(const CheckpointInfo& c, int rank, double blocked_s) {
  v1::CheckpointShard s;
  s.set_blocked_time_s(blocked_s);
  s.set_step(c.step);
  s.set_rank(rank);
  s.set_path((c.step_dir / ckpt::ShardFileName(rank)).string());
  s.set_bytes(c.bytes);
  s.set_xxh3(c.xxh3);
  s.set_tensor_count(static_cast<int32_t>(c.slices.size()));
  for (const CheckpointInfo::Slice& x : c.slices) {
    v1::TensorSlice* t = s.add_tensors();
    t->set_name(x.name);
    t->set_dtype("f32");
    t->add_shape(static_cast<int64_t>(x.total));
    t->set_element_offset(static_cast<int64_t>(x.offset));
    t->set_element_count(static_cast<int64_t>(x.count));
  }
  return s;
}

v1::WorkerPhase PhaseProto(Phase phase) {
  switch (phase) {
    case Phase::kData:
      return v1::WORKER_PHASE_DATA;
    case Phase::kForward:
      return v1::WORKER_PHASE_FORWARD;
    case Phase::kBackward:
      return v1::WORKER_PHASE_BACKWARD;
    case Phase::kCollective:
      return v1::WORKER_PHASE_COLLECTIVE;
    case Phase::kOptimizer:
      return v1::WORKER_PHASE_OPTIMIZER;
    case Phase::kEval:
      return v1::WORKER_PHASE_EVAL;
    case Phase::kCheckpoint:
      return v1::WORKER_PHASE_CHECKPOINT;
  }
  return v1::WORKER_PHASE_UNSPECIFIED;
}

int Fail(bool lead, runtime::CoordinatorClient* link, const std::string& what, v1::EndReason reason,
         int exit_code) {
  if (lead) spdlog::error("{}", what);
  if (link)
    link->Finish(v1::EXIT_KIND_ERROR, reason, what, 0, std::chrono::seconds(10)).IgnoreError();
  return exit_code;
}

}  // namespace belay::train
