// The fixture of the Supervisor's tests: an in-memory store, the fake scheduler, a fake clock
// and a tiny campaign, with helpers that play the workers' part (steps, shards, finishes).
#pragma once

#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <thread>

#include "common/checksum.h"
#include "common/ckpt/layout.h"
#include "common/ckpt/manifest.h"
#include "common/strings.h"
#include "common/testing/tiny_campaign.h"
#include "daemon/checkpoints/fake_checkpoint_files.h"
#include "daemon/scheduler/fake_scheduler.h"
#include "daemon/store/memory_store.h"
#include "daemon/store/records.h"
#include "daemon/supervisor/rank_times.h"
#include "daemon/supervisor/supervisor.h"
#include "gtest/gtest.h"

namespace belay::supervisor {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

// The campaign the supervisor's tests run: the tests' tiny campaign, 2 layers of width 32
// on 2 ranks, 100 steps with a checkpoint every 10, and restart limits small enough to reach.
inline CampaignSpec SupervisorTestSpec() {
  CampaignSpec s = testing::TinyCampaignSpec();
  s.model.n_layer = 2;
  s.model.n_head = 2;
  s.model.d_model = 32;
  s.model.seq_len = 32;
  s.train.total_steps = 100;
  s.train.micro_batch = 2;
  s.train.global_batch = 4;
  s.checkpoint.every_steps = 10;
  s.resources.ranks_per_node = 2;
  s.restart.max_restarts = 3;
  s.restart.max_rollbacks = 2;
  s.restart.hang_timeout = std::chrono::minutes(5);
  s.restart.backoff = {
      .initial = std::chrono::seconds(30), .max = std::chrono::minutes(10), .jitter = 0.0};
  return s;
}

// Its campaign file, as submitted.
inline const std::string& SpecText() {
  static const std::string text = FormatCampaignSpec(SupervisorTestSpec());
  return text;
}

inline std::string EnvOf(const sched::JobSpec& job, const std::string& key) {
  for (const auto& [k, v] : job.env) {
    if (k == key) return v;
  }
  return "";
}

inline bool Has(const std::vector<std::string>& v, const std::string& x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

class SupervisorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("belay_supervisor_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    absl::StatusOr<CampaignSpec> validated = testing::ValidatedCampaignSpec(SupervisorTestSpec());
    ASSERT_TRUE(validated.ok()) << validated.status();
    spec_ = *validated;
    spec_.checkpoint.dir = (dir_ / "ckpt").string();
    MakeSupervisor();
  }
  void TearDown() override { fs::remove_all(dir_); }

  void MakeSupervisor() {
    SupervisorOptions o;
    o.state_dir = dir_;
    o.worker_program = "/usr/bin/belay-worker";
    o.coordinator_address = "127.0.0.1:7000";
    o.good_after_steps = 5;
    o.verify_in_background = background_verify_;
    o.run_as_owner = run_as_owner_;
    o.token_key = token_key_;  // belayd's key file: the same across restarts
    sup_ = std::make_unique<Supervisor>(store_, sched_, clock_, o);
  }

  std::string SubmitAndStart() {
    absl::StatusOr<pb::Campaign> c =
        sup_->Submit(spec_, SpecText(), "/home/u/tiny.toml", 1000, "u");
    EXPECT_TRUE(c.ok()) << c.status();
    Tick();
    return c->id();
  }
  void Tick() {
    absl::Status s = sup_->Tick();
    ASSERT_TRUE(s.ok()) << s;
  }
  // Most tests hash checkpoints inside the round, so that one Tick decides; one test runs
  // the background hashing belayd uses.
  bool background_verify_ = false;
  // Supervisor option run_as_owner (belayd as root), and the user the test hands the shard
  // files and step directories it writes to (0: they stay the test's), as if the campaign's
  // ranks had written them as their owner.
  bool run_as_owner_ = false;
  std::string token_key_ = AttemptTokens::RandomKey();
  uid_t files_owner_ = 0;
  // A Slurm campaign of `ranks` one-rank nodes n0, n1, ... whose ranks registered, reporting
  // `steps` steps, 10 s apart, in which rank 2 computes `slow_s` per step and the others about
  // 0.1 s; then its job ends at the time limit. Returns the campaign id ("" on failure).
  // With `restart_midway`, belayd restarts halfway through the steps.
  std::string RunWithASlowRank(int64_t steps, double slow_s, bool restart_midway = false,
                               int ranks = 4) {
    spec_.resources.scheduler = SchedulerKind::kSlurm;
    spec_.resources.nodes = ranks;
    spec_.resources.ranks_per_node = 1;
    spec_.train.global_batch = 2 * ranks;
    const std::string id = SubmitAndStart();
    if (Attempt(id, 1).world_size() != ranks) return "";
    std::vector<std::string> names;
    for (int r = 0; r < ranks; ++r) names.push_back(Cat("n", r));
    sched_.SetNodes(JobOf(id, 1), names);
    Tick();
    for (int r = 0; r < ranks; ++r) {
      if (!sup_->OnRegister(id, 1, r, Cat("n", r)).ok()) return "";
    }
    for (int64_t step = 1; step <= steps; ++step) {
      if (restart_midway && step == steps / 2) {
        MakeSupervisor();
        Tick();
      }
      pb::StepMetrics m;
      m.set_step(step);
      m.set_loss(3.0);
      for (int r = 0; r < ranks; ++r)
        m.add_rank_compute_time_s(r == 2 ? slow_s : 0.1 + 0.001 * (r % 4));
      if (!sup_->OnStep(id, 1, m).ok()) return "";
      clock_.Advance(10s);
    }
    sched_.End(JobOf(id, 1), {}, 0, pb::END_REASON_TIME_LIMIT, "TIMEOUT");
    Tick();
    return id;
  }
  pb::Campaign Campaign(const std::string& id) {
    return store::GetCampaign(store_, id).value().value();
  }
  pb::Attempt Attempt(const std::string& id, int n) {
    return store::GetAttempt(store_, id, n).value().value();
  }
  std::string JobOf(const std::string& id, int n) { return Attempt(id, n).scheduler_job_id(); }
  std::vector<std::string> EventMessages(const std::string& id) {
    std::vector<std::string> out;
    const std::vector<pb::Event> events = store::ListEvents(store_, id).value();
    for (const pb::Event& e : events) out.push_back(e.message());
    return out;
  }
  bool HasEvent(const std::string& id, const std::string& text) {
    for (const std::string& m : EventMessages(id)) {
      if (m.find(text) != std::string::npos) return true;
    }
    return false;
  }
  void Steps(const std::string& id, int attempt, int64_t first, int64_t last, double loss = 3.0) {
    for (int64_t s = first; s <= last; ++s) {
      pb::StepMetrics m;
      m.set_step(s);
      m.set_loss(loss);
      ASSERT_TRUE(sup_->OnStep(id, attempt, m).ok());
    }
  }
  // Steps [first, last] of 2 s each, reported one a second.
  void PacedSteps(const std::string& id, int attempt, int64_t first, int64_t last) {
    for (int64_t s = first; s <= last; ++s) {
      pb::StepMetrics m;
      m.set_step(s);
      m.set_loss(3.0);
      m.set_step_time_s(2.0);
      ASSERT_TRUE(sup_->OnStep(id, attempt, m).ok());
      clock_.Advance(1s);
    }
  }
  void Finish(const std::string& id, int attempt, pb::ExitKind kind,
              pb::EndReason reason = pb::END_REASON_UNSPECIFIED) {
    for (int r = 0; r < 2; ++r) {
      pb::RankExit e;
      e.set_rank(r);
      e.set_exit_kind(kind);
      e.set_error_reason(reason);
      e.set_message("from the worker");
      ASSERT_TRUE(sup_->OnFinish(id, attempt, e).ok());
    }
  }
  fs::path StepDir(const std::string& id, int64_t step) const {
    return ckpt::StepDir(dir_ / "ckpt", id, step);
  }
  // One rank of `attempt` reports its shard of `step`: a real file in the step directory
  // holding its half of a 10-element tensor "w".
  absl::StatusOr<Supervisor::ShardReceipt> SaveShard(const std::string& id, int attempt,
                                                     int64_t step, int rank,
                                                     const std::string& content = "") {
    const fs::path d = StepDir(id, step);
    fs::create_directories(d);
    const fs::path f = d / ckpt::ShardFileName(rank);
    std::ofstream(f) << (content.empty()
                             ? Cat("shard ", rank, " of step ", step, " attempt ", attempt)
                             : content);
    if (files_owner_ != 0) {
      for (const fs::path& p : {d.parent_path(), d, f})
        EXPECT_EQ(::lchown(p.c_str(), files_owner_, static_cast<gid_t>(-1)), 0);
    }
    const pb::CheckpointShard sh = checkpoints::HalfOfTensorW(
        step, rank, f.string(), static_cast<int64_t>(fs::file_size(f)), Xxh3File(f).value());
    pb::StepMetrics m;
    m.set_step(step);
    m.set_loss(2.5);
    return sup_->OnShard(id, attempt, sh, rank == 0 ? &m : nullptr);
  }
  // Both ranks save `step`; the checkpoint is committed.
  void Save(const std::string& id, int attempt, int64_t step) {
    for (int r : {1, 0}) {
      absl::StatusOr<Supervisor::ShardReceipt> got = SaveShard(id, attempt, step, r);
      ASSERT_TRUE(got.ok()) << got.status();
      ASSERT_EQ(got->committed, r == 0) << got->message;
    }
  }
  std::vector<sched::RankEnd> Crash(int rank, int signal) {
    std::vector<sched::RankEnd> ranks = {{0, 0, 0, "fake-node-0"}, {1, 0, 0, "fake-node-0"}};
    ranks[static_cast<size_t>(rank)] = {rank, std::nullopt, signal, "fake-node-0"};
    return ranks;
  }

  fs::path dir_;
  CampaignSpec spec_;
  store::MemoryStore store_;
  sched::FakeScheduler sched_;
  FakeClock clock_;
  std::unique_ptr<Supervisor> sup_;
};

}  // namespace belay::supervisor
