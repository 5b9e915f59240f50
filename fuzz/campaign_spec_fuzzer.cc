// ParseCampaignSpec on any bytes: it must not crash, throw or hang, and a spec it accepts
// must survive FormatCampaignSpec and a second parse unchanged (campaign_spec.h's promise).
// Paths are not checked against this machine's files (check_paths = false).
#include <cstddef>
#include <cstdint>

#include "common/campaign_spec.h"
#include "fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  belay::SpecParseOptions options;
  options.check_paths = false;
  options.base_dir = "/fuzz/campaigns";
  const belay::SpecParseResult parsed =
      belay::ParseCampaignSpec(belay::fuzz::Text(data, size), "fuzz.toml", options);
  FUZZ_CHECK(parsed.spec.has_value() == parsed.errors.empty(),
             "a spec is returned exactly when there is no error");
  for (const belay::SpecError& e : parsed.errors) {
    FUZZ_CHECK(e.line >= 1 && e.column >= 1 && !e.message.empty(), e.ToString());
  }
  if (!parsed.ok()) return 0;
  const std::string formatted = belay::FormatCampaignSpec(*parsed.spec);
  const belay::SpecParseResult again =
      belay::ParseCampaignSpec(formatted, "formatted.toml", options);
  FUZZ_CHECK(again.ok(), "the formatted spec parses: ", again.errors[0].ToString(), "\n",
             formatted);
  FUZZ_CHECK(*again.spec == *parsed.spec, "the formatted spec parses back to the same spec:\n",
             formatted);
  return 0;
}
