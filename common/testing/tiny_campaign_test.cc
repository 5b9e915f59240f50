// The tiny campaign fixture: valid as it is, equal to its own campaign file parsed, and
// changed fields survive the file.
#include "common/testing/tiny_campaign.h"

#include <unistd.h>

#include <fstream>
#include <sstream>

#include "gtest/gtest.h"

namespace belay::testing {
namespace {

TEST(TinyCampaign, IsValidAndEqualToItsCampaignFileParsed) {
  absl::StatusOr<CampaignSpec> validated = ValidatedCampaignSpec(TinyCampaignSpec());
  ASSERT_TRUE(validated.ok()) << validated.status();
  CampaignSpec want = TinyCampaignSpec();
  want.resources.min_nodes = 1;  // follows nodes
  EXPECT_EQ(*validated, want);
}

TEST(TinyCampaign, ChangedFieldsSurviveTheFile) {
  CampaignSpec spec = TinyCampaignSpec();
  spec.campaign.name = "changed";
  spec.train.global_batch = 6;
  spec.train.zero_stage = 2;
  spec.resources.ranks_per_node = 3;
  spec.resources.scheduler = SchedulerKind::kSlurm;
  spec.resources.nodes = 4;
  spec.train.global_batch = 12;
  absl::StatusOr<CampaignSpec> validated = ValidatedCampaignSpec(spec);
  ASSERT_TRUE(validated.ok()) << validated.status();
  spec.resources.min_nodes = 4;  // follows nodes: an attempt never shrinks unless asked
  EXPECT_EQ(*validated, spec);
}

TEST(TinyCampaign, AnInvalidChangeIsReportedWithTheParsersErrors) {
  CampaignSpec spec = TinyCampaignSpec();
  spec.train.global_batch = 3;
  spec.resources.ranks_per_node = 2;
  absl::StatusOr<CampaignSpec> validated = ValidatedCampaignSpec(spec);
  ASSERT_TRUE(absl::IsInvalidArgument(validated.status())) << validated.status();
  EXPECT_NE(validated.status().message().find("train.global_batch"), std::string::npos)
      << validated.status();
}

TEST(TinyCampaign, TheWrittenFileLoadsAsTheSameSpec) {
  const std::filesystem::path path =
      std::filesystem::temp_directory_path() /
      ("belay_tiny_campaign_" + std::to_string(::getpid()) + ".toml");
  ASSERT_TRUE(WriteCampaignFile(TinyCampaignSpec(), path).ok());
  SpecParseOptions options;
  options.check_paths = false;
  SpecParseResult loaded = LoadCampaignSpec(path, options);
  std::filesystem::remove(path);
  ASSERT_TRUE(loaded.ok()) << loaded.errors[0].ToString();
  EXPECT_EQ(*loaded.spec, ValidatedCampaignSpec(TinyCampaignSpec()).value());
  EXPECT_FALSE(WriteCampaignFile(TinyCampaignSpec(), "/nonexistent/dir/c.toml").ok());
}

}  // namespace
}  // namespace belay::testing
