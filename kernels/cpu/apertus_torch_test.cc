// The Apertus building blocks against PyTorch: kernels/cpu/apertus_reference.py recomputes
// every op in float64 from the published formulas, with autograd for the gradients, on the
// inputs this test gives the CPU kernels (Debian's python3-torch, run with /usr/bin/python3).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <string>
#include <vector>

#include "kernels/ademamix.h"
#include "kernels/cpu/kernel_testing.h"
#include "kernels/gqa_attention.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"
#include "kernels/swiglu.h"
#include "kernels/xielu.h"

namespace belay::kernels::cpu {
namespace {

namespace fs = std::filesystem;
using testing::AllClose;

// fp32 kernels against float64: sums over O(10) terms of O(1) values.
constexpr double kAtol = 1e-5;
constexpr double kRtol = 1e-4;

template <typename T>
void Save(const fs::path& p, const std::vector<T>& v) {
  std::ofstream(p, std::ios::binary)
      .write(reinterpret_cast<const char*>(v.data()),
             static_cast<std::streamsize>(v.size() * sizeof(T)));
}

std::vector<double> Load(const fs::path& p) {
  std::ifstream in(p, std::ios::binary | std::ios::ate);
  std::vector<double> v(static_cast<size_t>(in.tellg()) / sizeof(double));
  in.seekg(0);
  in.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(v.size() * 8));
  return v;
}

TEST(ApertusTorchReference, EveryBlockMatchesPyTorchAutogradInFloat64) {
  const fs::path dir = fs::path(::testing::TempDir()) / ("apertus_ref_" + std::to_string(getpid()));
  fs::create_directories(dir);
  std::ostringstream cfg;
  cfg << std::setprecision(17) << "{";

  // RMSNorm.
  const int rn = 6, rc = 24;
  const float rms_eps = 1e-5f;
  const auto rx = testing::Uniform(rn * rc, 1, -2.0f, 3.0f),
             rw = testing::Uniform(rc, 2, 0.5f, 1.5f);
  const auto rg = testing::Uniform(rn * rc, 3);
  std::vector<float> ry(rx.size()), rstd(rn), rdx(rx.size(), 0.0f), rdw(rc, 0.0f);
  RmsNormForward(ry.data(), rstd.data(), rx.data(), rw.data(), rn, rc, rms_eps);
  RmsNormBackward(rdx.data(), rdw.data(), rg.data(), rx.data(), rw.data(), rstd.data(), rn, rc);
  Save(dir / "rms_x.f32", rx);
  Save(dir / "rms_w.f32", rw);
  Save(dir / "rms_dout.f32", rg);
  cfg << "\"rms_n\": " << rn << ", \"rms_c\": " << rc << ", \"rms_eps\": " << double{rms_eps};

  // RoPE, Apertus' settings, 128-wide heads so all three frequency bands occur.
  RopeParams rp;
  rp.theta = 500000.0;
  rp.factor = 8.0;
  const int pn = 5, ph = 2, phs = 128;
  const auto px = testing::Uniform(pn * ph * phs, 4), pg = testing::Uniform(px.size(), 5);
  const std::vector<int32_t> pos = {0, 1, 0, 4000, 60000};
  std::vector<float> py(px.size()), pdx(px.size()), inv(phs / 2);
  RopeForward(py.data(), px.data(), pos.data(), pn, ph, phs, ph * phs, rp);
  RopeBackward(pdx.data(), pg.data(), pos.data(), pn, ph, phs, ph * phs, rp);
  RopeInverseFrequencies(inv.data(), phs, rp);
  Save(dir / "rope_x.f32", px);
  Save(dir / "rope_dout.f32", pg);
  Save(dir / "rope_pos.i32", pos);
  cfg << ", \"rope_n\": " << pn << ", \"rope_h\": " << ph << ", \"rope_hs\": " << phs
      << ", \"rope_theta\": " << rp.theta << ", \"rope_factor\": " << rp.factor
      << ", \"rope_low\": " << rp.low_freq_factor << ", \"rope_high\": " << rp.high_freq_factor
      << ", \"rope_original\": " << rp.original_context;

  // xIELU at Apertus' initialisation.
  const float a_p = XieluRawAlphaP(0.8f), a_n = XieluRawAlphaN(0.8f);
  const auto xx = testing::Uniform(500, 6, -6.0f, 4.0f), xg = testing::Uniform(500, 7);
  std::vector<float> xy(xx.size()), xdx(xx.size(), 0.0f), xds(2, 0.0f);
  XieluForward(xy.data(), xx.data(), 500, a_p, a_n);
  XieluBackward(xdx.data(), &xds[0], &xds[1], xg.data(), xx.data(), 500, a_p, a_n);
  Save(dir / "xielu_x.f32", xx);
  Save(dir / "xielu_dout.f32", xg);
  cfg << ", \"xielu_a_p\": " << double{a_p} << ", \"xielu_a_n\": " << double{a_n};

  // SwiGLU.
  const int sn = 4, sf = 16;
  const auto sx = testing::Uniform(sn * 2 * sf, 8, -5.0f, 5.0f), sg = testing::Uniform(sn * sf, 9);
  std::vector<float> sy(sg.size()), sdx(sx.size(), 0.0f);
  SwigluForward(sy.data(), sx.data(), sn, sf);
  SwigluBackward(sdx.data(), sg.data(), sx.data(), sn, sf);
  Save(dir / "swiglu_x.f32", sx);
  Save(dir / "swiglu_dout.f32", sg);
  cfg << ", \"swiglu_n\": " << sn << ", \"swiglu_f\": " << sf;

  // GQA attention over packed documents.
  const GqaShape gs{.B = 2, .T = 9, .NH = 6, .NKV = 2, .hs = 8};
  const auto gq =
      testing::Uniform(static_cast<size_t>(gs.B * gs.T * gs.QkvWidth()), 10, -2.0f, 2.0f);
  const auto gg = testing::Uniform(static_cast<size_t>(gs.B * gs.T * gs.NH * gs.hs), 11);
  const std::vector<int32_t> doc = {0, 0, 0, 0, 1, 1, 2, 2, 2, 0, 0, 0, 0, 0, 0, 0, 1, 1};
  std::vector<float> gy(gg.size()), att(static_cast<size_t>(gs.B * gs.NH * gs.T * gs.T));
  std::vector<float> gdx(gq.size(), 0.0f);
  GqaAttentionForward(gy.data(), att.data(), gq.data(), doc.data(), gs);
  GqaAttentionBackward(gdx.data(), gg.data(), gq.data(), att.data(), gs);
  Save(dir / "gqa_qkv.f32", gq);
  Save(dir / "gqa_dout.f32", gg);
  Save(dir / "gqa_doc.i32", doc);
  cfg << ", \"gqa_b\": " << gs.B << ", \"gqa_t\": " << gs.T << ", \"gqa_nh\": " << gs.NH
      << ", \"gqa_nkv\": " << gs.NKV << ", \"gqa_hs\": " << gs.hs;

  // AdEMAMix through its warmups.
  AdemamixParams hp;
  hp.lr = 1e-2f;
  hp.weight_decay = 0.1f;
  hp.alpha_warmup = 3;
  hp.beta3_warmup = 4;
  constexpr int kSteps = 6, kN = 32;
  auto ap = testing::Uniform(kN, 12);
  Save(dir / "ade_p.f32", ap);
  std::vector<float> agrads, mf(kN, 0.0f), ms(kN, 0.0f), av(kN, 0.0f);
  for (int s = 1; s <= kSteps; ++s) {
    const auto g = testing::Uniform(kN, 20 + s);
    agrads.insert(agrads.end(), g.begin(), g.end());
    hp.step = s;
    AdemamixUpdate(ap.data(), g.data(), mf.data(), ms.data(), av.data(), kN, hp);
  }
  Save(dir / "ade_grads.f32", agrads);
  cfg << ", \"ade_steps\": " << kSteps << ", \"ade_lr\": " << double{hp.lr}
      << ", \"ade_wd\": " << double{hp.weight_decay} << ", \"ade_beta1\": " << double{hp.beta1}
      << ", \"ade_beta2\": " << double{hp.beta2} << ", \"ade_beta3\": " << double{hp.beta3}
      << ", \"ade_alpha\": " << double{hp.alpha} << ", \"ade_eps\": " << double{hp.eps}
      << ", \"ade_alpha_warmup\": " << hp.alpha_warmup
      << ", \"ade_beta3_warmup\": " << hp.beta3_warmup << "}\n";
  std::ofstream(dir / "config.json") << cfg.str();

  const std::string cmd =
      "/usr/bin/python3 " BELAY_SOURCE_DIR "/kernels/cpu/apertus_reference.py " + dir.string();
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;

  EXPECT_TRUE(AllClose(ry, Load(dir / "ref_rms_y.f64"), kAtol, kRtol));
  EXPECT_TRUE(AllClose(rdx, Load(dir / "ref_rms_dx.f64"), kAtol, kRtol));
  EXPECT_TRUE(AllClose(rdw, Load(dir / "ref_rms_dw.f64"), kAtol, kRtol));
  EXPECT_TRUE(AllClose(inv, Load(dir / "ref_rope_inv_freq.f64"), 0, 1e-7));
  EXPECT_TRUE(AllClose(py, Load(dir / "ref_rope_y.f64"), kAtol, kRtol));
  EXPECT_TRUE(AllClose(pdx, Load(dir / "ref_rope_dx.f64"), kAtol, kRtol));
  EXPECT_TRUE(AllClose(xy, Load(dir / "ref_xielu_y.f64"), kAtol, kRtol));
  EXPECT_TRUE(AllClose(xdx, Load(dir / "ref_xielu_dx.f64"), kAtol, kRtol));
  EXPECT_TRUE(AllClose(xds, Load(dir / "ref_xielu_dscalars.f64"), kAtol, kRtol));
  EXPECT_TRUE(AllClose(sy, Load(dir / "ref_swiglu_y.f64"), kAtol, kRtol));
  EXPECT_TRUE(AllClose(sdx, Load(dir / "ref_swiglu_dx.f64"), kAtol, kRtol));
  EXPECT_TRUE(AllClose(gy, Load(dir / "ref_gqa_y.f64"), kAtol, kRtol));
  EXPECT_TRUE(AllClose(gdx, Load(dir / "ref_gqa_dqkv.f64"), kAtol, kRtol));
  EXPECT_TRUE(AllClose(ap, Load(dir / "ref_ade_p.f64"), 1e-6, 1e-5));
  std::vector<float> states = mf;
  states.insert(states.end(), ms.begin(), ms.end());
  states.insert(states.end(), av.begin(), av.end());
  EXPECT_TRUE(AllClose(states, Load(dir / "ref_ade_states.f64"), 1e-6, 1e-5));
  fs::remove_all(dir);
}

}  // namespace
}  // namespace belay::kernels::cpu
