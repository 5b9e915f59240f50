// The tiny campaign of tests and benchmarks (tiny_campaign.h).
#include "common/testing/tiny_campaign.h"

#include <fstream>

#include "common/strings.h"

namespace belay::testing {

CampaignSpec TinyCampaignSpec() {
  CampaignSpec s;
  s.campaign.name = "tiny";
  s.model.n_layer = 1;
  s.model.n_head = 1;
  s.model.d_model = 8;
  s.model.seq_len = 8;
  s.model.vocab_size = 257;
  s.data.train = {"/data/train_*.bin"};
  s.train.total_steps = 10;
  s.train.micro_batch = 1;
  s.train.global_batch = 1;
  s.train.lr = 1e-3;
  s.checkpoint.dir = "/ckpt";
  s.checkpoint.every_steps = 1000;  // the parser's default when the file leaves it out
  return s;
}

absl::StatusOr<CampaignSpec> ValidatedCampaignSpec(const CampaignSpec& spec) {
  SpecParseOptions options;
  options.check_paths = false;
  SpecParseResult parsed = ParseCampaignSpec(FormatCampaignSpec(spec), "tiny.toml", options);
  if (parsed.ok()) return *std::move(parsed.spec);
  std::string errors;
  for (const SpecError& e : parsed.errors) errors += Cat(errors.empty() ? "" : "\n", e.ToString());
  return absl::InvalidArgumentError(errors);
}

absl::Status WriteCampaignFile(const CampaignSpec& spec, const std::filesystem::path& path) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << FormatCampaignSpec(spec);
  out.close();
  if (!out) return absl::InternalError(Cat(path.string(), ": cannot write the campaign file"));
  return absl::OkStatus();
}

}  // namespace belay::testing
