// BuildJobSpec as a pure function: what an attempt's job is told and asked for.
#include "daemon/supervisor/job_spec.h"

#include <algorithm>

#include "gtest/gtest.h"

namespace belay::supervisor {
namespace {

using namespace std::chrono_literals;

std::string EnvOf(const sched::JobSpec& job, const std::string& key) {
  for (const auto& [k, v] : job.env) {
    if (k == key) return v;
  }
  return "";
}

class JobSpecTest : public ::testing::Test {
 protected:
  JobSpecTest() {
    w_.worker_program = "/usr/bin/belay-worker";
    c_.set_id("tiny-1");
    c_.set_owner_uid(1000);
    c_.set_scheduler(pb::SCHEDULER_KIND_SLURM);
    a_.set_number(3);
    a_.set_world_size(4);
    a_.set_ranks_per_node(2);
    a_.add_excluded_nodes("n7");
    spec_.checkpoint.dir = "/ckpt";
    spec_.resources.partition = "gpu";
    r_.number = 3;
    r_.token = "secret";
    r_.log_dir = "/state/campaigns/tiny-1/attempt_3";
  }
  WorkerSettings w_;
  pb::Campaign c_;
  pb::Attempt a_;
  CampaignSpec spec_;
  JobRequest r_;
};

TEST_F(JobSpecTest, AResumingAttemptIsToldItsCheckpointAndToken) {
  a_.set_start_checkpoint_step(20);
  const sched::JobSpec job = BuildJobSpec(w_, c_, a_, spec_, r_);
  EXPECT_EQ(job.command.front(), "/usr/bin/belay-worker");
  EXPECT_EQ(job.command[5], "/state/campaigns/tiny-1/attempt_3/campaign.toml");
  ASSERT_GE(job.command.size(), 8u);
  EXPECT_EQ(job.command[6], "--resume");
  EXPECT_EQ(job.command[7], "/ckpt/tiny-1/step_000000020");
  EXPECT_EQ(EnvOf(job, "BELAY_TOKEN"), "secret");
  EXPECT_EQ(EnvOf(job, "BELAY_ATTEMPT"), "3");
  EXPECT_EQ(EnvOf(job, "BELAY_COORDINATOR"), "");  // none: workers do not report
  EXPECT_EQ(job.world_size, 4);
  EXPECT_EQ(job.exclude_nodes, std::vector<std::string>{"n7"});
  EXPECT_EQ(job.partition, "gpu");
  EXPECT_FALSE(job.run_as_uid.has_value());
}

TEST_F(JobSpecTest, APresubmittedJobAsksBelaydWhereToResume) {
  a_.set_start_checkpoint_step(20);
  r_.resume_from_coordinator = true;
  const sched::JobSpec job = BuildJobSpec(w_, c_, a_, spec_, r_);
  EXPECT_EQ(job.command.back(), "--resume-from-coordinator");
  EXPECT_EQ(std::count(job.command.begin(), job.command.end(), "--resume"), 0);
}

TEST_F(JobSpecTest, TheLinksCaTravelsWithTheJobAndTheOwnerRunsIt) {
  w_.coordinator_address = "10.0.0.1:7000";
  w_.coordinator_ca_pem = "-----BEGIN CERTIFICATE-----";
  w_.coordinator_tls_name = "belayd";
  w_.run_as_owner = true;
  r_.mtbf = 3600s;
  const sched::JobSpec job = BuildJobSpec(w_, c_, a_, spec_, r_);
  EXPECT_EQ(EnvOf(job, "BELAY_COORDINATOR"), "10.0.0.1:7000");
  EXPECT_EQ(EnvOf(job, "BELAY_COORDINATOR_CA"),
            "/state/campaigns/tiny-1/attempt_3/coordinator-ca.pem");
  EXPECT_EQ(EnvOf(job, "BELAY_COORDINATOR_TLS_NAME"), "belayd");
  EXPECT_FALSE(EnvOf(job, "BELAY_CHECKPOINT_MTBF").empty());
  ASSERT_EQ(job.files.size(), 2u);
  EXPECT_EQ(job.files[1].first, "coordinator-ca.pem");
  EXPECT_EQ(job.run_as_uid, 1000u);
}

}  // namespace
}  // namespace belay::supervisor
