// One rank's training loop.
#include "worker/train/trainer.h"

#include <chrono>

#include <ctime>

#include "common/strings.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"
#include "worker/ckpt/layout.h"
#include "worker/ckpt/manifest.h"
#include "worker/ckpt/shard_file.h"
#include "worker/data/loader_state.h"
#include "worker/model/goldfish.h"
#include "worker/train/update.h"

namespace belay::train {

absl::StatusOr<std::unique_ptr<Trainer>> Trainer::Create(const CampaignSpec& spec) {
  data::DataLoaderOptions opts;
  opts.globs = spec.data.train;
  opts.seq_len = spec.model.seq_len;
  opts.vocab_size = spec.model.vocab_size;
  opts.seed = spec.train.seed;
  opts.shuffle = spec.data.shuffle;
  absl::StatusOr<std::unique_ptr<data::DataLoader>> train = data::DataLoader::Open(opts);
  if (!train.ok()) return train.status();
  std::unique_ptr<data::DataLoader> val;
  if (!spec.data.val.empty()) {
    opts.globs = spec.data.val;
    opts.shuffle = false;  // evaluation always reads the same sequences
    absl::StatusOr<std::unique_ptr<data::DataLoader>> v = data::DataLoader::Open(opts);
    if (!v.ok()) return v.status();
    val = std::move(*v);
  }
  return std::unique_ptr<Trainer>(new Trainer(spec, std::move(*train), std::move(val)));
}

Trainer::Trainer(const CampaignSpec& spec, std::unique_ptr<data::DataLoader> train,
                 std::unique_ptr<data::DataLoader> val)
    : spec_(spec),
      layout_(model::Gpt2Config::FromSpec(spec.model)),
      train_data_(std::move(train)),
      val_data_(std::move(val)),
      model_(layout_, static_cast<int>(spec.train.micro_batch), static_cast<int>(spec.model.seq_len)),
      optimizer_(layout_, spec.train),
      params_(static_cast<size_t>(layout_.total())),
      grads_(static_cast<size_t>(layout_.total())) {
  model::InitGpt2(layout_, params_, spec.train.seed);
  accum_ = spec.grad_accum_steps(/*world_size=*/1);
  const size_t M = static_cast<size_t>(spec.train.micro_batch);
  const size_t T = static_cast<size_t>(spec.model.seq_len);
  const size_t A = static_cast<size_t>(accum_);
  seqs_.resize(A * M * (T + 1));
  inputs_.resize(A * M * T);
  targets_.resize(A * M * T);
  masks_.resize(A * M * T);
}

StepMetrics Trainer::TrainStep() {
  auto t0 = std::chrono::steady_clock::now();
  const int T = static_cast<int>(spec_.model.seq_len);
  const int M = static_cast<int>(spec_.train.micro_batch);
  // Load the whole step's sequences and masks first: the loss is normalised by the counted
  // positions of the whole batch, which must be known before any backward pass. Sequence
  // numbers are global, so the batch is the same whatever the number of ranks.
  int64_t dropped = 0;
  for (int64_t a = 0; a < accum_; ++a) {
    for (int i = 0; i < M; ++i) {
      size_t row = static_cast<size_t>(a) * static_cast<size_t>(M) + static_cast<size_t>(i);
      int32_t* seq = seqs_.data() + row * static_cast<size_t>(T + 1);
      train_data_->Sequence(
          data::MicroBatchStart(next_sequence_, M, /*world_size=*/1, a, /*rank=*/0) +
              static_cast<uint64_t>(i),
          seq);
      std::copy(seq, seq + T, inputs_.data() + row * static_cast<size_t>(T));
      std::copy(seq + 1, seq + T + 1, targets_.data() + row * static_cast<size_t>(T));
      uint8_t* mask = masks_.data() + row * static_cast<size_t>(T);
      if (spec_.train.goldfish) {
        dropped += model::GoldfishMask(seq, T, spec_.train.goldfish->k, spec_.train.goldfish->h, mask);
      } else {
        std::fill(mask, mask + T, uint8_t{1});
      }
    }
  }
  const int64_t positions = accum_ * M * T;
  UpdateResult u = UpdateOnBatch(model_, optimizer_, spec_.train, spec_.total_steps(), step_ + 1,
                                 params_, grads_, inputs_.data(), targets_.data(), masks_.data(),
                                 accum_);
  ++step_;
  next_sequence_ += static_cast<uint64_t>(spec_.train.global_batch);

  StepMetrics m;
  m.step = step_;
  m.loss = u.loss;
  m.lr = u.lr;
  m.grad_norm = u.grad_norm;
  m.goldfish_dropped = static_cast<double>(dropped) / static_cast<double>(positions);
  m.step_time_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  m.tokens_per_s = m.step_time_s > 0 ? static_cast<double>(positions) / m.step_time_s : 0.0;
  return m;
}

double Trainer::Evaluate() {
  const int T = static_cast<int>(spec_.model.seq_len);
  const int M = static_cast<int>(spec_.train.micro_batch);
  std::vector<int32_t> seq(static_cast<size_t>(T + 1));
  std::vector<int32_t> inputs(static_cast<size_t>(M * T)), targets(inputs.size());
  std::vector<uint8_t> mask(inputs.size(), 1);
  double sum = 0;
  int64_t count = 0;
  uint64_t g = 0;
  for (int64_t b = 0; b < spec_.train.eval_batches; ++b) {
    for (int i = 0; i < M; ++i, ++g) {
      val_data_->Sequence(g % val_data_->sequences_per_epoch(), seq.data());
      std::copy(seq.begin(), seq.begin() + T, inputs.begin() + i * T);
      std::copy(seq.begin() + 1, seq.end(), targets.begin() + i * T);
    }
    sum += model_.Forward(params_.data(), inputs.data(), targets.data(), mask.data());
    count += int64_t{M} * T;
  }
  return sum / static_cast<double>(count);
}

namespace {

// The three flat buffers a checkpoint holds, each stored tensor by tensor under its logical
// name so that a later loader can re-partition them over any number of ranks.
constexpr std::string_view kParamPrefix = "param/";
constexpr std::string_view kAdamMPrefix = "adam.m/";
constexpr std::string_view kAdamVPrefix = "adam.v/";

nlohmann::json ConfigJson(const model::Gpt2Config& c) {
  return {{"n_layer", c.n_layer},         {"n_head", c.n_head},
          {"d_model", c.d_model},         {"max_seq_len", c.max_seq_len},
          {"vocab_size", c.vocab_size},   {"padded_vocab", c.padded_vocab}};
}

}  // namespace

absl::StatusOr<CheckpointInfo> Trainer::SaveCheckpoint(const std::filesystem::path& root,
                                                       const StepMetrics& last) {
  const std::string& campaign = spec_.campaign.name;
  absl::StatusOr<std::filesystem::path> tmp = ckpt::BeginStep(root, campaign, step_);
  if (!tmp.ok()) return tmp.status();

  ckpt::ShardWriter writer;
  for (const model::TensorView& t : layout_.tensors()) {
    const size_t o = static_cast<size_t>(t.offset), n = static_cast<size_t>(t.size);
    const uint64_t total = static_cast<uint64_t>(t.size);
    for (auto [prefix, buf] : {std::pair{kParamPrefix, &params_}, std::pair{kAdamMPrefix, &optimizer_.m()},
                               std::pair{kAdamVPrefix, &optimizer_.v()}}) {
      absl::Status s = writer.Add(Cat(prefix, t.name), 0, total,
                                  std::span<const float>(buf->data() + o, n));
      if (!s.ok()) return s;
    }
  }
  nlohmann::json meta = {
      {"step", step_},
      {"world_size", 1},
      {"rank", 0},
      {"model", ConfigJson(layout_.config())},
      {"loader", data::LoaderStateToJson(train_data_->State(next_sequence_))},
      // Training draws no random numbers after initialisation (no dropout); the seed is
      // what a resumed run would need to redraw anything.
      {"rng", {{"init_seed", spec_.train.seed}}},
  };
  writer.SetMetadata(meta.dump());
  absl::StatusOr<ckpt::ShardFileInfo> shard = writer.Write(*tmp / ckpt::ShardFileName(0));
  if (!shard.ok()) return shard.status();

  ckpt::Manifest manifest;
  manifest.campaign = campaign;
  manifest.step = step_;
  manifest.world_size = 1;
  manifest.shards.push_back(
      {0, shard->path.filename().string(), shard->bytes, shard->xxh3});
  manifest.metrics = {{"loss", last.loss}, {"lr", last.lr}, {"grad_norm", last.grad_norm},
                      {"sequences_seen", next_sequence_}};
  manifest.created_unix = static_cast<int64_t>(std::time(nullptr));
  if (absl::Status s = ckpt::WriteManifest(*tmp, manifest); !s.ok()) return s;
  if (absl::Status s = ckpt::CommitStep(root, campaign, step_); !s.ok()) return s;

  absl::StatusOr<std::vector<int64_t>> removed =
      ckpt::ApplyRetention(root, campaign, spec_.checkpoint.keep_last,
                           spec_.checkpoint.keep_every, /*protect_step=*/step_);
  if (!removed.ok()) {
    spdlog::warn("checkpoint retention: {}", std::string(removed.status().message()));
  }
  return CheckpointInfo{ckpt::StepDir(root, campaign, step_), step_,
                        static_cast<int64_t>(shard->bytes)};
}

absl::Status Trainer::LoadStep(const std::filesystem::path& step_dir) {
  absl::StatusOr<ckpt::Manifest> manifest = ckpt::ReadManifest(step_dir);
  if (!manifest.ok()) return manifest.status();
  if (manifest->world_size != 1) {
    return absl::UnimplementedError(Cat(step_dir.string(), ": saved on ", manifest->world_size,
                                        " ranks; this trainer runs on 1"));
  }
  absl::StatusOr<ckpt::ShardReader> reader =
      ckpt::ShardReader::Open(step_dir / manifest->shards[0].file);  // verifies the checksum
  if (!reader.ok()) return reader.status();
  nlohmann::json meta = nlohmann::json::parse(reader->metadata(), nullptr, /*allow_exceptions=*/false);
  if (!meta.is_object() || !meta.contains("model") || !meta.contains("loader") ||
      !meta.contains("step") || !meta["step"].is_number_integer()) {
    return absl::DataLossError(Cat(step_dir.string(), ": shard metadata lacks model, loader or step"));
  }
  if (meta["model"] != ConfigJson(layout_.config())) {
    return absl::FailedPreconditionError(Cat(step_dir.string(), ": saved model ", meta["model"].dump(),
                                             " differs from the campaign's ",
                                             ConfigJson(layout_.config()).dump()));
  }
  absl::StatusOr<data::LoaderState> loader = data::LoaderStateFromJson(meta["loader"]);
  if (!loader.ok()) return loader.status();
  if (absl::Status s = train_data_->CheckResume(*loader); !s.ok()) return s;

  for (const model::TensorView& t : layout_.tensors()) {
    const size_t o = static_cast<size_t>(t.offset), n = static_cast<size_t>(t.size);
    for (auto [prefix, buf] : {std::pair{kParamPrefix, &params_}, std::pair{kAdamMPrefix, &optimizer_.m()},
                               std::pair{kAdamVPrefix, &optimizer_.v()}}) {
      absl::Status s = reader->Read(Cat(prefix, t.name), 0, std::span<float>(buf->data() + o, n));
      if (!s.ok()) return s;
    }
  }
  step_ = meta["step"].get<int64_t>();
  next_sequence_ = loader->next_sequence;
  return absl::OkStatus();
}

absl::Status Trainer::Resume(const std::filesystem::path& dir) {
  std::error_code ec;
  if (std::filesystem::exists(dir / "manifest.json", ec)) return LoadStep(dir);
  // A checkpoint root: the newest committed step that loads, falling back to older ones.
  absl::StatusOr<std::vector<int64_t>> steps = ckpt::ListCommittedSteps(dir, spec_.campaign.name);
  if (!steps.ok()) return steps.status();
  if (steps->empty()) {
    return absl::NotFoundError(Cat(dir.string(), ": no committed checkpoint of campaign ",
                                   spec_.campaign.name));
  }
  absl::Status last_error;
  for (auto it = steps->rbegin(); it != steps->rend(); ++it) {
    std::filesystem::path step_dir = ckpt::StepDir(dir, spec_.campaign.name, *it);
    last_error = LoadStep(step_dir);
    if (last_error.ok()) return last_error;
    spdlog::warn("skipping checkpoint {}: {}", step_dir.string(), std::string(last_error.message()));
    // A failed load may have overwritten part of the state: start that part over.
    model::InitGpt2(layout_, params_, spec_.train.seed);
    std::fill(optimizer_.m().begin(), optimizer_.m().end(), 0.0f);
    std::fill(optimizer_.v().begin(), optimizer_.v().end(), 0.0f);
    step_ = 0;
    next_sequence_ = 0;
  }
  return last_error;
}

}  // namespace belay::train
