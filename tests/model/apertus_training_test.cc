// belay's Apertus training with AdEMAMix against PyTorch: the same initial parameters and
// batches (documents ended by EOD tokens, a caller mask, 2 accumulated micro-batches) go
// through train::UpdateOnBatch with an ApertusModel and optim::Optimizer in fp32, and through
// tests/model/apertus_training_reference.py in float64 (its own AdEMAMix, from the paper);
// 10 steps' losses, gradient norms, learning rates, the α and β3 schedules and the final
// parameters must agree, with GQA, QK-norm, Llama-3 RoPE scaling and document masking on and
// both warmups ending within the 10 steps.
//
// Measured: losses within 1.5e-7 relative, gradient norms within 4e-7 but 2.2e-5 at step 8
// (an xIELU kink, below), learning rates and α equal, β3 within 9e-8 (belay holds β1 and β3
// in fp32); after 10 steps 1 of 65,924 parameters differs by more than 1e-5 (by 1.6e-5).
//
// Mutations of the reference, each tried by hand (the loss's relative error per step 1..10,
// then what else failed):
// - attention crossing documents (causal mask only): 5.9e-4, 3.5e-3, … 9.1e-3; norms from
//   step 1 (8.4e-3), 61,807 parameters off by > 1e-5, largest 1.9e-2.
// - EOD positions counted in the loss: 2.5e-3 … 3.1e-3; norms, parameters (61,036, 1.5e-2).
// - no QK-norm: 3.8e-3 … 3.4e-3 (3.1e-5 at step 7, the smallest); norms, parameters (61,460).
// - no RoPE scaling (θ's plain frequencies): 1.3e-3 … 9.8e-4 (2.1e-5 at step 9, the smallest);
//   norms, parameters (61,325).
// - GQA sharing by head h % n_kv_head instead of h / (n_head / n_kv_head): 1.2e-2 … 2.9e-3;
//   norms, parameters (61,787).
// - α without warmup: step 1 agrees (its loss comes before any update), then 2.3e-4 …
//   4.2e-4; α, norms, parameters (59,762, largest 1.5e-3).
// - β3 without warmup: step 1 agrees, then 4.1e-5, 1.2e-4, 2.5e-6, 5.4e-5, … 5.8e-4; β3,
//   norms, parameters (60,338, largest 2.0e-3).
// - positions not restarting after EOD: passes, and must: with attention inside documents,
//   RoPE's scores depend only on the distance between positions, so the restart cannot change
//   anything (it matters to a model that attends across documents).
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <string>
#include <vector>

#include "common/rng.h"
#include "kernels/ademamix.h"
#include "tests/model/compare.h"
#include "tests/model/raw_files.h"
#include "tests/model/small_apertus.h"
#include "worker/model/apertus.h"
#include "worker/optim/optimizer.h"
#include "worker/train/update.h"

namespace belay {
namespace {

using testing::CompareParameters;
using testing::NoisyApertusParams;
using testing::ParameterDrift;
using testing::ReadF64;
using testing::SmallApertusConfig;
using testing::WriteApertusReferenceKeys;
using testing::WriteRaw;

TEST(ApertusTrainingReference, AdemamixStepsMatchPyTorch) {
  model::ApertusConfig c = SmallApertusConfig();
  c.eod_token = 3;
  TrainSpec ts;
  ts.micro_batch = 2;
  ts.global_batch = 4;  // 2 accumulation steps on one rank
  ts.lr = 2e-3;
  ts.min_lr = 2e-4;
  ts.warmup_steps = 2;
  ts.weight_decay = 0.1;
  ts.grad_clip = 2.3;  // clips some steps, not all
  OptimizerSpec os;
  os.name = OptimizerKind::kAdemamix;
  os.beta3 = 0.999;
  os.alpha = 5.0;
  os.alpha_warmup_steps = 6;  // both warmups end within the 10 steps
  os.beta3_warmup_steps = 8;
  const int64_t steps = 10, accum = 2, M = 2, T = 32;

  const model::ApertusLayout layout(c);
  std::vector<float> params = NoisyApertusParams(layout, 77, 8), grads(params.size());
  const std::vector<float> initial = params;

  // Rows of T+1 random tokens with one or two EOD tokens in the inputs, so that every row holds
  // two or three documents; the caller's mask drops about 1/8 of the positions on top.
  SplitMix64 rng(99);
  const size_t n = static_cast<size_t>(steps * accum * M * T);
  std::vector<int32_t> inputs(n), targets(n), seq(static_cast<size_t>(T + 1));
  std::vector<uint8_t> mask(n), counted(n);
  for (size_t row = 0; row < n / T; ++row) {
    for (int32_t& x : seq) {
      x = static_cast<int32_t>(rng.Next() % 97);
      if (x == c.eod_token) x = 4;
    }
    const size_t first = 4 + rng.Next() % 12;
    seq[first] = c.eod_token;
    if (rng.Next() % 2) seq[first + 6 + rng.Next() % 10] = c.eod_token;
    std::copy(seq.begin(), seq.begin() + T, inputs.begin() + static_cast<long>(row * T));
    std::copy(seq.begin() + 1, seq.end(), targets.begin() + static_cast<long>(row * T));
    for (size_t t = 0; t < static_cast<size_t>(T); ++t) mask[row * T + t] = rng.Next() % 8 != 0;
  }
  // What the trainer normalises by: the caller's mask without the document ends
  // (Trainer::MaskDocumentEnds). The reference derives its own from the tokens.
  model::ApertusLossMask(counted.data(), inputs.data(), mask.data(), static_cast<int64_t>(n),
                         c.eod_token);

  model::ApertusModel model(layout, M, T);
  optim::Optimizer opt(optim::WholeTensors(layout.tensors()), layout.total(), ts, os);
  std::vector<double> losses, norms, lrs, alphas, beta3s;
  for (int64_t s = 0; s < steps; ++s) {
    const size_t off = static_cast<size_t>(s * accum * M * T);
    const train::UpdateResult r =
        train::UpdateOnBatch(model, opt, ts, steps, s + 1, params, grads, inputs.data() + off,
                             targets.data() + off, counted.data() + off, accum);
    losses.push_back(r.loss);
    norms.push_back(r.grad_norm);
    lrs.push_back(r.lr);
    const kernels::cpu::AdemamixParams p = opt.AdemamixParams(r.lr, s + 1);
    alphas.push_back(kernels::cpu::AdemamixAlpha(p));
    beta3s.push_back(kernels::cpu::AdemamixBeta3(p));
  }

  const std::filesystem::path dir = std::filesystem::path(::testing::TempDir()) /
                                    ("apertus_train_ref_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  {
    std::ofstream cfg(dir / "config.json");
    cfg << std::setprecision(17) << "{";
    WriteApertusReferenceKeys(cfg, layout);
    cfg << ", \"steps\": " << steps << ", \"accum\": " << accum << ", \"micro_batch\": " << M
        << ", \"seq_len\": " << T << ", \"lr\": " << ts.lr << ", \"min_lr\": " << ts.min_lr
        << ", \"warmup_steps\": " << ts.warmup_steps << ", \"total_steps\": " << steps
        << ", \"grad_clip\": " << ts.grad_clip << ", \"optimizer\": {\"beta1\": " << ts.beta1
        << ", \"beta2\": " << ts.beta2 << ", \"eps\": " << ts.eps
        << ", \"weight_decay\": " << ts.weight_decay << ", \"beta3\": " << os.beta3
        << ", \"alpha\": " << os.alpha << ", \"alpha_warmup\": " << os.alpha_warmup_steps
        << ", \"beta3_warmup\": " << os.beta3_warmup_steps << "}}\n";
  }
  WriteRaw(dir / "params.f32", initial);
  WriteRaw(dir / "inputs.i32", inputs);
  WriteRaw(dir / "targets.i32", targets);
  WriteRaw(dir / "mask.u8", mask);
  const std::string cmd = "/usr/bin/python3 " BELAY_SOURCE_DIR
                          "/tests/model/apertus_training_reference.py " +
                          dir.string();
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;

  const std::vector<double> ref_losses = ReadF64(dir / "ref_losses.f64");
  const std::vector<double> ref_norms = ReadF64(dir / "ref_grad_norms.f64");
  const std::vector<double> ref_lrs = ReadF64(dir / "ref_lrs.f64");
  const std::vector<double> ref_alphas = ReadF64(dir / "ref_alphas.f64");
  const std::vector<double> ref_beta3s = ReadF64(dir / "ref_beta3s.f64");
  const std::vector<double> ref_params = ReadF64(dir / "ref_params.f64");
  ASSERT_EQ(ref_losses.size(), static_cast<size_t>(steps));
  ASSERT_EQ(ref_norms.size(), static_cast<size_t>(steps));
  ASSERT_EQ(ref_alphas.size(), static_cast<size_t>(steps));
  ASSERT_EQ(ref_beta3s.size(), static_cast<size_t>(steps));
  ASSERT_EQ(ref_params.size(), params.size());

  // fp32 against float64: losses agree to ~1e-7 relative, gradient norms too except in a step
  // where one MLP pre-activation falls within 1e-6 below 0, xIELU's clamp interval
  // (eps, 0] where its derivative jumps by α_n: fp32 and float64 can put it on either side,
  // which changes one row's gradient below that layer (measured 2e-5 on the norm). α and β3
  // are computed from fp32 hyperparameters (β1 = 0.9f), hence 1e-6.
  for (int64_t s = 0; s < steps; ++s) {
    const size_t i = static_cast<size_t>(s);
    std::cout << "step " << s + 1 << ": loss " << losses[i] << " (relative error "
              << std::abs(losses[i] - ref_losses[i]) / ref_losses[i] << "), grad norm " << norms[i]
              << " (relative error " << std::abs(norms[i] - ref_norms[i]) / ref_norms[i]
              << "), alpha " << alphas[i] << " (error " << std::abs(alphas[i] - ref_alphas[i])
              << "), beta3 " << beta3s[i] << " (error " << std::abs(beta3s[i] - ref_beta3s[i])
              << ")\n";
    EXPECT_NEAR(losses[i], ref_losses[i], 1e-5 * ref_losses[i]) << "step " << s + 1;
    EXPECT_NEAR(norms[i], ref_norms[i], 1e-4 * ref_norms[i]) << "step " << s + 1;
    EXPECT_DOUBLE_EQ(lrs[i], ref_lrs[i]) << "step " << s + 1;
    EXPECT_NEAR(alphas[i], ref_alphas[i], 1e-6 * os.alpha) << "step " << s + 1;
    EXPECT_NEAR(beta3s[i], ref_beta3s[i], 1e-6) << "step " << s + 1;
  }
  EXPECT_LT(ts.grad_clip, *std::max_element(ref_norms.begin(), ref_norms.end()))
      << "no step was clipped";
  EXPECT_GT(ts.grad_clip, *std::min_element(ref_norms.begin(), ref_norms.end()))
      << "every step was clipped";

  // After 10 updates each parameter moved by up to ~10·lr·(1 + α). Elements whose updates
  // differ by more than fp32 rounding are those below an xIELU kink flip (above) or whose
  // gradient is at rounding level (Adam's direction is then noise): a few, none by more than
  // a step. A wrong formula moves most elements by ~lr.
  const ParameterDrift drift = CompareParameters(params, ref_params, 1e-5, 1e-3);
  EXPECT_EQ(drift.off_loose, 0u);
  EXPECT_LT(drift.off_tight, params.size() / 1000);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace belay
