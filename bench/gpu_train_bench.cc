// GPT-2 124M training steps on one GPU (bf16, the CUDA kernels): tokens/s and MFU as llm.c
// counts it. scripts/gpu-check.sh runs it beside the same shapes in PyTorch and llm.c and prints
// the ratios. Every step trains on the same B*T+1 tokens: random ones, or with --data the first
// of an llm.c token shard (the batch llm.c's train_gpt2cu -a 1 takes from the same file).
// Output: human lines, then one JSON line.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/device.h"
#include "worker/data/shard.h"
#include "worker/model/cuda_gpt2.h"
#include "worker/model/params.h"

namespace {

constexpr double kPeakBf16Flops = 989e12;  // H100 SXM dense bf16, as llm.c assumes

int Usage() {
  std::fprintf(stderr,
               "usage: gpu_train_bench [--batch B (default: the largest of 64, 32, 16, 8 that "
               "fits)] [--seq T (1024)] [--steps N (10)] [--warmup N (3)] [--layers L (12)] "
               "[--materialised-attention] [--data SHARD (llm.c token shard: its first B*T+1 "
               "tokens instead of random ones)]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  using belay::model::CudaGpt2;
  int batch = 0, seq = 1024, steps = 10, warmup = 3, layers = 12;
  auto attention = CudaGpt2::Attention::kAuto;
  std::string data;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--materialised-attention") == 0) {
      attention = CudaGpt2::Attention::kMaterialised;
      continue;
    }
    if (std::strcmp(argv[i], "--data") == 0 && i + 1 < argc) {
      data = argv[++i];
      continue;
    }
    auto next = [&](int* out) {
      if (i + 1 >= argc) return false;
      *out = std::atoi(argv[++i]);
      return *out > 0;
    };
    bool ok = false;
    if (std::strcmp(argv[i], "--batch") == 0)
      ok = next(&batch);
    else if (std::strcmp(argv[i], "--seq") == 0)
      ok = next(&seq);
    else if (std::strcmp(argv[i], "--steps") == 0)
      ok = next(&steps);
    else if (std::strcmp(argv[i], "--warmup") == 0)
      ok = next(&warmup);
    else if (std::strcmp(argv[i], "--layers") == 0)
      ok = next(&layers);
    if (!ok) return Usage();
  }
  auto devices = belay::kernels::ListCudaDevices();
  if (!devices.ok()) {
    std::fprintf(stderr, "gpu_train_bench: %s\n", std::string(devices.status().message()).c_str());
    return 1;
  }
  const std::string device = (*devices)[0].name;

  belay::ModelSpec spec;
  spec.n_layer = layers;
  spec.n_head = 12;
  spec.d_model = 768;
  spec.seq_len = seq;
  spec.vocab_size = 50257;
  const belay::model::ParameterLayout layout(belay::model::Gpt2Config::FromSpec(spec));
  std::vector<float> params(static_cast<size_t>(layout.total()));
  belay::model::InitGpt2(layout, params, 1234);

  std::unique_ptr<CudaGpt2> model;
  for (int b : batch > 0 ? std::vector<int>{batch} : std::vector<int>{64, 32, 16, 8, 4, 2, 1}) {
    auto m = CudaGpt2::Create(layout, b, seq, attention);
    if (m.ok()) {
      model = std::move(*m);
      break;
    }
    std::fprintf(stderr, "B=%d: %s\n", b, std::string(m.status().message()).c_str());
    if (m.status().code() != absl::StatusCode::kResourceExhausted) return 1;
  }
  if (!model) return 1;
  if (auto st = model->SetParameters(params.data()); !st.ok()) {
    std::fprintf(stderr, "%s\n", st.ToString().c_str());
    return 1;
  }
  const int B = model->B(), T = model->T();
  const int N = B * T;
  std::vector<int32_t> tokens(static_cast<size_t>(N) + 1);
  if (data.empty()) {
    std::mt19937 rng(1);
    for (auto& t : tokens) t = static_cast<int32_t>(rng() % 50257u);
  } else {
    auto shard = belay::data::TokenShard::Open(data, spec.vocab_size);
    if (!shard.ok()) {
      std::fprintf(stderr, "gpu_train_bench: %s\n", shard.status().ToString().c_str());
      return 1;
    }
    if (shard->num_tokens() < N + 1) {
      std::fprintf(stderr, "gpu_train_bench: %s has %lld tokens, B=%d T=%d needs %d\n",
                   data.c_str(), static_cast<long long>(shard->num_tokens()), B, T, N + 1);
      return 1;
    }
    shard->Read(0, N + 1, tokens.data());
  }
  std::vector<int32_t> inputs(tokens.begin(), tokens.end() - 1),
      targets(tokens.begin() + 1, tokens.end());
  std::vector<uint8_t> mask(static_cast<size_t>(N), 1);
  const float scale = 1.0f / static_cast<float>(N);

  double first_loss = 0, last_loss = 0, timed_s = 0;
  for (int s = 1; s <= warmup + steps; ++s) {
    const auto t0 = std::chrono::steady_clock::now();
    absl::Status st = model->ZeroGradients();
    absl::StatusOr<double> loss = model->Forward(inputs.data(), targets.data(), mask.data(), scale);
    if (!loss.ok()) st = loss.status();
    if (st.ok()) st = model->Backward();
    absl::StatusOr<double> sq =
        st.ok() ? model->GradientSumOfSquares() : absl::StatusOr<double>(st);
    if (!sq.ok()) st = sq.status();
    if (st.ok()) {
      belay::kernels::cpu::AdamWParams p;
      p.lr = 3e-4f;
      p.step = s;
      const double norm = std::sqrt(*sq);
      st = model->Update(p, 0.1f, norm > 1.0 ? static_cast<float>(1.0 / (norm + 1e-6)) : 1.0f);
    }
    if (st.ok()) st = model->Synchronize();
    if (!st.ok()) {
      std::fprintf(stderr, "step %d: %s\n", s, st.ToString().c_str());
      return 1;
    }
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (s == 1) first_loss = *loss * scale;
    last_loss = *loss * scale;
    if (s > warmup) timed_s += dt;
    std::printf("step %2d  loss %.4f  %.1f ms%s\n", s, *loss * scale, dt * 1e3,
                s <= warmup ? "  (warm-up)" : "");
  }
  const double step_s = timed_s / steps;
  const double tokens_per_s = N / step_s;
  const auto P = static_cast<double>(layout.total());
  const double flops_per_token = 6.0 * P + 6.0 * layers * 768.0 * T;
  const double mfu = tokens_per_s * flops_per_token / kPeakBf16Flops;
  const char* impl = model->fused_attention() ? "belay" : "belay-materialised-attention";
  std::printf(
      "%s %s: GPT-2 %d layers, B=%d T=%d, %.1f ms/step, %.0f tokens/s, MFU %.1f%% "
      "(GPU memory %.1f GiB)\n",
      impl, device.c_str(), layers, B, T, step_s * 1e3, tokens_per_s, mfu * 100,
      static_cast<double>(model->device_bytes()) / (1u << 30));
  std::printf(
      "{\"impl\": \"%s\", \"device\": \"%s\", \"B\": %d, \"T\": %d, \"layers\": %d, "
      "\"step_ms\": %.3f, \"tokens_per_s\": %.1f, \"mfu\": %.4f, \"first_loss\": %.4f, "
      "\"last_loss\": %.4f}\n",
      impl, device.c_str(), B, T, layers, step_s * 1e3, tokens_per_s, mfu, first_loss, last_loss);
  return 0;
}
