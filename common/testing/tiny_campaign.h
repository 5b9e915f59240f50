// A small valid campaign for tests and benchmarks, built as a CampaignSpec value (so a test
// changes only the fields it is about) and written as a campaign file by FormatCampaignSpec.
// Tests about the campaign file's text itself (parser errors, positions) write TOML by hand.
#pragma once

#include <filesystem>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/campaign_spec.h"

namespace belay::testing {

// GPT-2 with 1 layer, 1 head, d_model 8, seq_len 8 and the byte vocabulary (257); data
// "/data/train_*.bin" (absent: validate with ValidatedCampaignSpec, which does not look);
// 10 steps of global batch 1 at lr 1e-3; checkpoints in "/ckpt" every 1000 steps; one local
// rank. Every other field is what ParseCampaignSpec gives a file that leaves it out, except
// resources.min_nodes: 0, which follows resources.nodes (the file says min_nodes = nodes), so
// a test may change nodes alone; validated, it is nodes.
CampaignSpec TinyCampaignSpec();

// The spec as belayd would take it: FormatCampaignSpec, then ParseCampaignSpec without
// checking paths (defaults applied, every rule checked). INVALID_ARGUMENT with the parser's
// errors, one a line, when the changed spec is not a valid campaign.
absl::StatusOr<CampaignSpec> ValidatedCampaignSpec(const CampaignSpec& spec);

// Writes FormatCampaignSpec(spec) to `path` (replaced if present; its directory must exist).
absl::Status WriteCampaignFile(const CampaignSpec& spec, const std::filesystem::path& path);

}  // namespace belay::testing
