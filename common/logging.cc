// spdlog default logger on stderr, one pattern for every belay program.
#include "common/logging.h"

#include <memory>

#include "common/strings.h"
#include "common/version.h"
#include "spdlog/sinks/stdout_sinks.h"
#include "spdlog/spdlog.h"

namespace belay {

absl::Status InitLogging(std::string_view program, std::string_view level) {
  spdlog::level::level_enum lvl = spdlog::level::from_str(std::string(level));
  if (lvl == spdlog::level::off && level != "off") {
    return absl::InvalidArgumentError(
        Cat("log level \"", level,
            "\" is not allowed; allowed: trace, debug, info, warn, error, critical, off"));
  }
  auto logger = std::make_shared<spdlog::logger>(std::string(program),
                                                 std::make_shared<spdlog::sinks::stderr_sink_mt>());
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %n[%P]: %v");
  logger->set_level(lvl);
  spdlog::set_default_logger(std::move(logger));
  return absl::OkStatus();
}

std::string VersionLine(std::string_view program) {
  return Cat(program, " ", kVersion, " (rev ", kGitRevision, ", CUDA ",
             kBuiltWithCuda ? "on" : "off", ")");
}

}  // namespace belay
