// belayd: the coordinator daemon. Wiring only.
#include "CLI/CLI.hpp"
#include "common/logging.h"

int main(int argc, char** argv) {
  CLI::App app{"belayd: the belay coordinator; owns campaign state and drives the scheduler",
               "belayd"};
  app.set_version_flag("--version", belay::VersionLine("belayd"));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  std::cout << app.help();
  return 2;
}
