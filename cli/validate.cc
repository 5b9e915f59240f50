// `belay validate FILE...`: checks campaign files without submitting them.
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "common/campaign_spec.h"

namespace belay::cli {
namespace {

struct ValidateOptions {
  std::vector<std::string> files;
  bool offline = false;
  bool print = false;
};

int RunValidate(const ValidateOptions& opts) {
  int rc = kExitOk;
  for (const std::string& file : opts.files) {
    SpecParseOptions parse_opts;
    parse_opts.check_paths = !opts.offline;
    SpecParseResult result = LoadCampaignSpec(file, parse_opts);
    if (result.ok()) {
      std::cout << "OK " << result.spec->campaign.name << "\n";
      if (opts.print) std::cout << FormatCampaignSpec(*result.spec) << "\n";
      continue;
    }
    rc = kExitInvalid;
    for (const SpecError& e : result.errors) std::cerr << e.ToString() << "\n";
  }
  return rc;
}

}  // namespace

void AddValidateCommand(CLI::App& app, int* exit_code) {
  auto opts = std::make_shared<ValidateOptions>();
  CLI::App* cmd = app.add_subcommand(
      "validate",
      "Check campaign files: prints 'OK <name>' per valid file, one line per error otherwise "
      "(file:line:column: key: message); exits 2 if any file is invalid");
  cmd->add_option("FILE", opts->files, "campaign files (TOML)")->required();
  cmd->add_flag("--offline", opts->offline,
                "skip file-system checks (data globs, checkpoint directory), for a file meant "
                "for another machine");
  cmd->add_flag("--print", opts->print,
                "after OK, print the effective campaign: every key, defaults filled in, paths "
                "made absolute");
  cmd->callback([opts, exit_code] { *exit_code = RunValidate(*opts); });
}

}  // namespace belay::cli
