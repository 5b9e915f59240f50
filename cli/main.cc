// belay: the command-line client. Wiring only; each command group lives in its own file.
#include <iostream>
#include <string>

#include "CLI/CLI.hpp"
#include "cli/commands.h"
#include "common/logging.h"

int main(int argc, char** argv) {
  CLI::App app{"belay: run LLM training campaigns on Slurm clusters without a person watching",
               "belay"};
  app.require_subcommand(1);
  app.set_version_flag("--version", belay::VersionLine("belay"));
  int exit_code = belay::cli::kExitOk;
  std::string socket;
  app.add_option("--socket", socket,
                 "belayd's socket (default: $BELAY_SOCKET, else belayd's default under the state "
                 "directory)")
      ->envname("BELAY_SOCKET");
  belay::cli::AddValidateCommand(app, &exit_code);
  belay::cli::AddPlanCommand(app, &exit_code);
  belay::cli::AddDataCommand(app, &exit_code);
  belay::cli::AddExportCommand(app, &exit_code);
  belay::cli::AddCampaignCommands(app, &socket, &exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : belay::cli::kExitInvalid;
  }
  return exit_code;
}
