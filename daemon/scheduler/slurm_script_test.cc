// The pure parts of the Slurm backend: job comments, shell quoting, the batch script, the
// meaning of Slurm job states.
#include "daemon/scheduler/slurm_script.h"

#include "gtest/gtest.h"
#include "slurm/slurm.h"

namespace belay::sched {
namespace {

TEST(SlurmScript, CommentsRoundTripAndStatesMeanWhatDesignSays) {
  const std::string c = SlurmJobComment("demo-3", 12, "secret-token");
  EXPECT_EQ(c.rfind("belay:campaign=demo-3:attempt=12:key=", 0), 0u) << c;
  EXPECT_EQ(c.find("secret"), std::string::npos);
  EXPECT_NE(SlurmJobComment("demo-3", 12, "other-token"), c);
  const std::optional<SlurmJobTag> tag = ParseSlurmJobComment(c);
  ASSERT_TRUE(tag.has_value());
  EXPECT_EQ(tag->campaign_id, "demo-3");
  EXPECT_EQ(tag->attempt, 12);
  EXPECT_EQ(tag->key.size(), 16u);
  for (const char* bad :
       {"", "belay:campaign=:attempt=1:key=0123456789abcdef",
        "belay:campaign=x:attempt=0:key=0123456789abcdef",
        "belay:campaign=x:attempt=1x:key=0123456789abcdef", "belay:campaign=x:attempt=1",
        "belay:campaign=x:attempt=1:key=xyz", "other:campaign=x:attempt=1:key=0123456789abcdef"}) {
    EXPECT_FALSE(ParseSlurmJobComment(bad).has_value()) << bad;
  }
  EXPECT_EQ(MeaningOfSlurmState(JOB_PENDING).state, JobState::kQueued);
  EXPECT_EQ(MeaningOfSlurmState(JOB_RUNNING).state, JobState::kRunning);
  EXPECT_EQ(MeaningOfSlurmState(JOB_TIMEOUT).reason, pb::END_REASON_TIME_LIMIT);
  EXPECT_EQ(MeaningOfSlurmState(JOB_NODE_FAIL).reason, pb::END_REASON_NODE_FAILURE);
  EXPECT_EQ(MeaningOfSlurmState(JOB_PREEMPTED).reason, pb::END_REASON_PREEMPTED);
  EXPECT_EQ(MeaningOfSlurmState(JOB_OOM).reason, pb::END_REASON_OUT_OF_MEMORY);
  EXPECT_EQ(MeaningOfSlurmState(JOB_CANCELLED).reason, pb::END_REASON_CANCELLED_EXTERNALLY);
  EXPECT_EQ(MeaningOfSlurmState(JOB_FAILED).reason, pb::END_REASON_UNSPECIFIED);
  EXPECT_EQ(MeaningOfSlurmState(JOB_NODE_FAIL | JOB_COMPLETING).state, JobState::kRunning);
  EXPECT_EQ(ShellQuote("it's"), "'it'\\''s'");
  JobSpec j;
  j.campaign_id = "c-1";
  j.attempt = 2;
  j.world_size = 4;
  j.ranks_per_node = 2;
  j.log_dir = "/shared/logs dir";
  j.command = {"/opt/belay-worker", "train", "--spec", "/a b/c.toml"};
  const std::string s = SlurmBatchScript(j, "mpirun");
  EXPECT_NE(s.find("export BELAY_LOG_DIR='/shared/logs dir'"), std::string::npos) << s;
  EXPECT_NE(s.find("'mpirun' -np 4 /bin/sh -c "), std::string::npos) << s;
  EXPECT_NE(s.find(" belay-rank '/opt/belay-worker' 'train' '--spec' '/a b/c.toml' &"),
            std::string::npos)
      << s;
  EXPECT_NE(s.find("trap 'kill -USR1 \"$child\" 2>/dev/null' USR1"), std::string::npos) << s;
  // GPU ranks: srun, one task per GPU.
  j.gpus_per_node = 2;
  const std::string g = SlurmBatchScript(j, "mpirun");
  EXPECT_EQ(g.find("mpirun"), std::string::npos) << g;
  EXPECT_NE(
      g.find("srun --mpi=none --kill-on-bad-exit=1 --ntasks=4 --ntasks-per-node=2 /bin/sh -c "),
      std::string::npos)
      << g;
  EXPECT_NE(g.find(" belay-rank '/opt/belay-worker' 'train' '--spec' '/a b/c.toml' &"),
            std::string::npos)
      << g;
}

TEST(SlurmScript, NodeStatesReadAsSinfoWritesThem) {
  EXPECT_EQ(SlurmNodeStateName(NODE_STATE_IDLE), "IDLE");
  EXPECT_EQ(SlurmNodeStateName(NODE_STATE_ALLOCATED), "ALLOCATED");
  EXPECT_EQ(SlurmNodeStateName(NODE_STATE_DOWN | NODE_STATE_NO_RESPOND), "DOWN*");
  EXPECT_EQ(SlurmNodeStateName(NODE_STATE_IDLE | NODE_STATE_DRAIN), "IDLE+DRAIN");
  EXPECT_EQ(SlurmNodeStateName(NODE_STATE_MIXED | NODE_STATE_FAIL), "MIXED+FAIL");
}

}  // namespace
}  // namespace belay::sched
