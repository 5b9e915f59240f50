// belay-worker: the trainer process, one per GPU or CPU rank. Wiring only.
#include <iostream>

#include "CLI/CLI.hpp"
#include "common/logging.h"
#include "kernels/device.h"
#include "worker/train_command.h"

namespace {

int ListDevices() {
  std::cout << "CUDA runtime: " << belay::kernels::CudaRuntimeVersion() << "\n";
  absl::StatusOr<std::vector<belay::kernels::CudaDevice>> devices =
      belay::kernels::ListCudaDevices();
  if (!devices.ok()) {
    std::cout << "no GPU: " << devices.status().message() << "\n";
    return 0;
  }
  for (const belay::kernels::CudaDevice& d : *devices) {
    std::cout << "gpu " << d.index << ": " << d.name << ", compute capability " << d.cc_major << "."
              << d.cc_minor << ", " << (d.memory_bytes >> 20) << " MiB, " << d.multiprocessors
              << " SMs\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"belay-worker: trains one rank of a belay campaign", "belay-worker"};
  app.set_version_flag("--version", belay::VersionLine("belay-worker"));
  app.require_subcommand(1);
  int rc = 0;
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error, critical or off")
      ->capture_default_str();
  app.parse_complete_callback([&log_level] {
    absl::Status s = belay::InitLogging("belay-worker", log_level);
    if (!s.ok()) throw CLI::ValidationError("--log-level", std::string(s.message()));
  });
  app.add_subcommand("devices", "List the accelerators this process can use")->callback([&rc] {
    rc = ListDevices();
  });
  belay::worker::AddTrainCommand(app, &rc);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  return rc;
}
