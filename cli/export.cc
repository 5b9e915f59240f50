// `belay export`: a committed checkpoint as a Hugging Face model directory.
#include "worker/export/export.h"

#include <iostream>
#include <memory>
#include <string>

#include "cli/commands.h"

namespace belay::cli {
namespace {

struct ExportArgs {
  std::string checkpoint;
  std::string out;
  std::string dtype = "bf16";
};

int RunExport(const ExportArgs& args) {
  hf::ExportOptions opts;
  opts.checkpoint = args.checkpoint;
  opts.out = args.out;
  opts.dtype = args.dtype == "fp32" ? hf::ExportDType::kF32 : hf::ExportDType::kBf16;
  absl::StatusOr<hf::ExportSummary> summary = hf::ExportCheckpoint(opts);
  if (!summary.ok()) {
    std::cerr << "belay export: " << summary.status().message() << "\n";
    // A checkpoint that cannot be exported as it is (its model, its format) is bad input;
    // anything else (missing or corrupt files, I/O) a failure.
    const absl::StatusCode code = summary.status().code();
    return code == absl::StatusCode::kInvalidArgument ||
                   code == absl::StatusCode::kFailedPrecondition
               ? kExitInvalid
               : kExitFailure;
  }
  std::cout << summary->architecture << " from " << summary->step_dir.string() << ": "
            << summary->tensors << " tensors, " << summary->parameters << " parameters, "
            << args.dtype << ", in " << args.out << "\n";
  return kExitOk;
}

}  // namespace

void AddExportCommand(CLI::App& app, int* exit_code) {
  auto args = std::make_shared<ExportArgs>();
  CLI::App* cmd = app.add_subcommand(
      "export",
      "Write a committed checkpoint as a Hugging Face model: DIR/model.safetensors and "
      "DIR/config.json (GPT2LMHeadModel or ApertusForCausalLM). Every shard is verified by "
      "checksum first. Prints one line; exits 1 if the checkpoint is missing or corrupt or DIR "
      "cannot be written, 2 if the checkpoint's model cannot be exported");
  cmd->add_option("CHECKPOINT", args->checkpoint,
                  "a checkpoint step directory (step_<N>), or a directory above committed steps "
                  "(a campaign's, or a checkpoint root with one campaign): its newest step")
      ->required();
  cmd->add_option("--out", args->out, "output directory (created if missing)")->required();
  cmd->add_option("--dtype", args->dtype,
                  "element type of the weights: bf16 (rounded to nearest even) or fp32 (as "
                  "trained)")
      ->capture_default_str()
      ->check(CLI::IsMember({"bf16", "fp32"}));
  cmd->callback([args, exit_code] { *exit_code = RunExport(*args); });
}

}  // namespace belay::cli
