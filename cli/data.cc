// `belay data prepare`: turns text files into byte-level token shards for training.
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "worker/data/prepare.h"

namespace belay::cli {
namespace {

struct PrepareArgs {
  std::string out;
  std::vector<std::string> files;
  double val_fraction = 0.05;
  int64_t shard_tokens = 100'000'000;
};

void PrintSplit(const char* name, const data::SplitSummary& split) {
  std::cout << name << ": " << split.files.size()
            << (split.files.size() == 1 ? " file, " : " files, ") << split.tokens << " tokens";
  if (!split.files.empty()) {
    std::cout << " (" << split.files.front().string();
    if (split.files.size() > 1) std::cout << " .. " << split.files.back().filename().string();
    std::cout << ")";
  }
  std::cout << "\n";
}

int RunPrepare(const PrepareArgs& args) {
  data::PrepareOptions opts;
  opts.out_dir = args.out;
  opts.inputs.assign(args.files.begin(), args.files.end());
  opts.val_fraction = args.val_fraction;
  opts.shard_tokens = args.shard_tokens;
  absl::StatusOr<data::PrepareSummary> summary = data::PrepareByteCorpus(opts);
  if (!summary.ok()) {
    std::cerr << "belay data prepare: " << summary.status().message() << "\n";
    return kExitFailure;
  }
  PrintSplit("train", summary->train);
  PrintSplit("val", summary->val);
  return kExitOk;
}

}  // namespace

void AddDataCommand(CLI::App& app, int* exit_code) {
  CLI::App* data = app.add_subcommand("data", "Prepare training data");
  data->require_subcommand(1);

  auto args = std::make_shared<PrepareArgs>();
  CLI::App* prepare = data->add_subcommand(
      "prepare",
      "Tokenize text files byte by byte (256 = end-of-text, vocabulary 257) into llm.c token "
      "shards DIR/train_NNNNNN.bin and DIR/val_NNNNNN.bin; each file is one document. Prints "
      "one line per split; exits 1 if an input cannot be read or DIR cannot be written");
  prepare
      ->add_option("--out", args->out,
                   "output directory (created if missing; must not hold shards yet)")
      ->required();
  prepare
      ->add_option("--val-fraction", args->val_fraction,
                   "fraction of the tokens, taken from the end, that form the val split")
      ->capture_default_str()
      ->check(CLI::Validator(
          [](std::string& s) -> std::string {
            char* end = nullptr;
            double v = std::strtod(s.c_str(), &end);
            if (s.empty() || *end != '\0') return "not a number: " + s;
            return v >= 0.0 && v < 1.0 ? "" : "must be in [0, 1), got " + s;
          },
          "in [0, 1)"));
  prepare->add_option("--shard-tokens", args->shard_tokens, "most tokens per shard file")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{2147483647}));
  prepare->add_option("FILE", args->files, "text files, one document each")->required();
  prepare->callback([args, exit_code] { *exit_code = RunPrepare(*args); });
}

}  // namespace belay::cli
