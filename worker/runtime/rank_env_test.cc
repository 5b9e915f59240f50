// Tests of RankInfoFromEnvironment: each launcher's variables, agreement between launchers,
// and the errors for disagreement, partial and malformed settings.
#include "worker/runtime/rank_env.h"

#include <cstdlib>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace belay::runtime {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

using Vars = std::map<std::string, std::string, std::less<>>;

absl::StatusOr<RankInfo> Read(Vars vars) {
  return RankInfoFromEnvironment(MapEnvironment(std::move(vars)));
}

std::string ErrorOf(Vars vars) {
  absl::StatusOr<RankInfo> info = Read(std::move(vars));
  EXPECT_FALSE(info.ok());
  EXPECT_EQ(info.status().code(), absl::StatusCode::kInvalidArgument) << info.status();
  return std::string(info.status().message());
}

const Vars kSlurm = {{"SLURM_PROCID", "3"}, {"SLURM_NTASKS", "8"}, {"SLURM_LOCALID", "1"}};
const Vars kMpirun = {{"OMPI_COMM_WORLD_RANK", "3"},
                      {"OMPI_COMM_WORLD_SIZE", "8"},
                      {"OMPI_COMM_WORLD_LOCAL_RANK", "1"}};
const Vars kBelay = {{"BELAY_RANK", "3"}, {"BELAY_WORLD_SIZE", "8"}, {"BELAY_LOCAL_RANK", "1"}};

Vars Merge(std::initializer_list<Vars> parts) {
  Vars out;
  for (const Vars& p : parts) out.insert(p.begin(), p.end());
  return out;
}

TEST(RankEnv, NoLauncherVariablesMeansASingleRank) {
  absl::StatusOr<RankInfo> info = Read({{"PATH", "/usr/bin"}, {"SLURM_JOB_ID", "17"}});
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(*info,
            (RankInfo{.rank = 0, .world_size = 1, .local_rank = 0, .source = RankSource::kSingle}));
}

TEST(RankEnv, ReadsSlurm) {
  absl::StatusOr<RankInfo> info = Read(kSlurm);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(*info,
            (RankInfo{.rank = 3, .world_size = 8, .local_rank = 1, .source = RankSource::kSlurm}));
}

TEST(RankEnv, ReadsMpirun) {
  absl::StatusOr<RankInfo> info = Read(kMpirun);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(*info,
            (RankInfo{.rank = 3, .world_size = 8, .local_rank = 1, .source = RankSource::kMpirun}));
}

TEST(RankEnv, ReadsBelayLocalBackend) {
  absl::StatusOr<RankInfo> info = Read(kBelay);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(*info,
            (RankInfo{.rank = 3, .world_size = 8, .local_rank = 1, .source = RankSource::kBelay}));
}

TEST(RankEnv, AgreeingSourcesNameTheFirstInSlurmMpirunBelayOrder) {
  absl::StatusOr<RankInfo> slurm = Read(Merge({kSlurm, kBelay}));
  ASSERT_TRUE(slurm.ok()) << slurm.status();
  EXPECT_EQ(slurm->source, RankSource::kSlurm);
  EXPECT_EQ(slurm->rank, 3);
  absl::StatusOr<RankInfo> two = Read(Merge({kBelay, kMpirun}));
  ASSERT_TRUE(two.ok()) << two.status();
  EXPECT_EQ(two->source, RankSource::kMpirun);
}

TEST(RankEnv, MpirunInsideASlurmAllocationCountsOverTheDaemonsStep) {
  // mpirun's daemons ran as tasks 0..1 of a 2-node step; the ranks are 3 of 8.
  Vars vars = Merge({kMpirun, kBelay});
  vars["SLURM_PROCID"] = "1";
  vars["SLURM_NTASKS"] = "2";
  vars["SLURM_LOCALID"] = "0";
  absl::StatusOr<RankInfo> info = Read(vars);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(*info,
            (RankInfo{.rank = 3, .world_size = 8, .local_rank = 1, .source = RankSource::kMpirun}));
}

TEST(RankEnv, DisagreeingRankNamesBothSourcesAndValues) {
  Vars vars = Merge({kSlurm, kBelay});
  vars["BELAY_RANK"] = "2";
  EXPECT_THAT(ErrorOf(vars),
              AllOf(HasSubstr("disagrees"), HasSubstr("Slurm"), HasSubstr("SLURM_PROCID=3"),
                    HasSubstr("belay"), HasSubstr("BELAY_RANK=2")));
}

TEST(RankEnv, DisagreeingWorldSizeIsAnError) {
  Vars vars = Merge({kMpirun, kBelay});
  vars["BELAY_WORLD_SIZE"] = "4";
  EXPECT_THAT(ErrorOf(vars),
              AllOf(HasSubstr("OMPI_COMM_WORLD_SIZE=8"), HasSubstr("BELAY_WORLD_SIZE=4")));
}

TEST(RankEnv, DisagreeingLocalRankIsAnError) {
  Vars vars = Merge({kSlurm, kBelay});
  vars["SLURM_LOCALID"] = "0";
  EXPECT_THAT(ErrorOf(vars), AllOf(HasSubstr("SLURM_LOCALID=0"), HasSubstr("BELAY_LOCAL_RANK=1")));
}

TEST(RankEnv, MalformedNumbersNameTheVariable) {
  for (const char* bad : {"", "x", "1x", " 1", "1 ", "+1", "-1", "0x3", "1.0", "99999999999"}) {
    Vars vars = kSlurm;
    vars["SLURM_PROCID"] = bad;
    EXPECT_THAT(ErrorOf(vars), HasSubstr("SLURM_PROCID='" + std::string(bad) + "'"))
        << "value '" << bad << "'";
  }
  Vars vars = kBelay;
  vars["BELAY_LOCAL_RANK"] = "-2";
  EXPECT_THAT(ErrorOf(vars), HasSubstr("BELAY_LOCAL_RANK"));
}

TEST(RankEnv, MalformedValueInAnotherwiseAgreeingSourceIsAnError) {
  Vars vars = Merge({kSlurm, kMpirun});
  vars["OMPI_COMM_WORLD_SIZE"] = "eight";
  EXPECT_THAT(ErrorOf(vars), HasSubstr("OMPI_COMM_WORLD_SIZE='eight'"));
}

TEST(RankEnv, RankMustBeBelowWorldSize) {
  Vars vars = kMpirun;
  vars["OMPI_COMM_WORLD_RANK"] = "8";
  EXPECT_THAT(ErrorOf(vars),
              AllOf(HasSubstr("OMPI_COMM_WORLD_RANK=8"), HasSubstr("OMPI_COMM_WORLD_SIZE=8")));
}

TEST(RankEnv, LocalRankMustBeBelowWorldSize) {
  Vars vars = kBelay;
  vars["BELAY_LOCAL_RANK"] = "8";
  EXPECT_THAT(ErrorOf(vars), HasSubstr("BELAY_LOCAL_RANK=8"));
}

TEST(RankEnv, ZeroWorldSizeIsAnError) {
  Vars vars = {{"BELAY_RANK", "0"}, {"BELAY_WORLD_SIZE", "0"}, {"BELAY_LOCAL_RANK", "0"}};
  EXPECT_THAT(ErrorOf(vars), HasSubstr("BELAY_WORLD_SIZE=0"));
}

TEST(RankEnv, PartialSourceNamesTheMissingVariable) {
  Vars vars = kSlurm;
  vars.erase("SLURM_NTASKS");
  EXPECT_THAT(ErrorOf(vars), AllOf(HasSubstr("SLURM_NTASKS is not set"), HasSubstr("Slurm")));
  EXPECT_THAT(ErrorOf({{"BELAY_LOCAL_RANK", "0"}}), HasSubstr("BELAY_RANK is not set"));
}

TEST(RankEnv, ProcessEnvironmentReadsRealVariables) {
  ASSERT_EQ(setenv("BELAY_RANK_ENV_TEST_PROBE", "42", /*overwrite=*/1), 0);
  Environment env = ProcessEnvironment();
  EXPECT_EQ(env("BELAY_RANK_ENV_TEST_PROBE"), std::optional<std::string>("42"));
  unsetenv("BELAY_RANK_ENV_TEST_PROBE");
  EXPECT_EQ(env("BELAY_RANK_ENV_TEST_PROBE"), std::nullopt);
}

TEST(RankEnv, SourceNames) {
  EXPECT_EQ(RankSourceName(RankSource::kSingle), "single");
  EXPECT_EQ(RankSourceName(RankSource::kSlurm), "Slurm");
  EXPECT_EQ(RankSourceName(RankSource::kMpirun), "mpirun");
  EXPECT_EQ(RankSourceName(RankSource::kBelay), "belay");
}

TEST(RankEnv, DeviceIsTheLocalRanksNeverTheGlobalRankModuloTheCount) {
  // Rank 5 of 8 is local rank 1 of its node (4 GPUs): device 1, not 5 mod 4 = 1 by luck ...
  EXPECT_EQ(*ChooseCudaDevice(
                {.rank = 5, .world_size = 8, .local_rank = 1, .source = RankSource::kSlurm}, 4),
            1);
  // ... and on nodes with different rank counts the modulo would collide: rank 6 of 7 as
  // local rank 0 of a node whose first rank is 6 takes device 0, where 6 mod 4 would be 2.
  EXPECT_EQ(*ChooseCudaDevice(
                {.rank = 6, .world_size = 7, .local_rank = 0, .source = RankSource::kSlurm}, 4),
            0);
  // One visible device (Slurm bound one GPU to each task): that one, whatever the local rank.
  EXPECT_EQ(*ChooseCudaDevice(
                {.rank = 3, .world_size = 4, .local_rank = 3, .source = RankSource::kSlurm}, 1),
            0);
  EXPECT_EQ(*ChooseCudaDevice(RankInfo{}, 1), 0);
}

TEST(RankEnv, MoreLocalRanksThanDevicesOrNoDevicesAreErrors) {
  absl::StatusOr<int> d = ChooseCudaDevice(
      {.rank = 4, .world_size = 8, .local_rank = 4, .source = RankSource::kMpirun}, 4);
  ASSERT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(d.status().message().find("local rank 4"), std::string_view::npos) << d.status();
  EXPECT_NE(d.status().message().find("only 4 visible CUDA devices"), std::string_view::npos)
      << d.status();
  EXPECT_EQ(ChooseCudaDevice(RankInfo{}, 0).status().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace belay::runtime
