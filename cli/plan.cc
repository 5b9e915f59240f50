// `belay plan FILE`: what a campaign asks of each rank (parameters, FLOPs per token, tokens
// per step, memory per ZeRO stage) and whether it fits the memory a rank has.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "common/campaign_spec.h"
#include "common/strings.h"
#include "nlohmann/json.hpp"
#include "worker/train/training_plan.h"

namespace belay::cli {
namespace {

using train::FormatBytes;
using train::RankBytes;
using train::TrainingPlan;

struct PlanOptions {
  std::string file;
  bool json = false;
  std::string memory;      // per node, CPU ranks
  std::string gpu_memory;  // per GPU: a size or a name of KnownGpus()
};

// The memory one rank may use, and where the figure comes from.
struct Budget {
  int64_t bytes = 0;
  std::string source;
};

int64_t ThisMachinesMemory() {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? int64_t{pages} * page : 0;
}

// GPUs: --gpu-memory (a size or a GPU name); CPUs: the node's memory, --memory or this
// machine's, over the ranks of a node.
absl::StatusOr<Budget> BudgetOf(const CampaignSpec& spec, const PlanOptions& opts) {
  if (spec.resources.gpus_per_node > 0) {
    if (opts.gpu_memory.empty()) return Budget{};
    if (std::optional<int64_t> named = train::GpuMemoryBytes(opts.gpu_memory)) {
      return Budget{*named, Cat(opts.gpu_memory, ": ", FormatBytes(*named), " per GPU")};
    }
    absl::StatusOr<int64_t> size = train::ParseByteSize(opts.gpu_memory);
    if (!size.ok()) {
      std::string names;
      for (const train::NamedGpu& g : train::KnownGpus()) names += Cat(" ", g.name);
      return absl::InvalidArgumentError(
          Cat("--gpu-memory: ", size.status().message(), "; or a GPU name:", names));
    }
    return Budget{*size, Cat(FormatBytes(*size), " per GPU (--gpu-memory)")};
  }
  int64_t node = 0;
  std::string from;
  if (!opts.memory.empty()) {
    absl::StatusOr<int64_t> size = train::ParseByteSize(opts.memory);
    if (!size.ok()) return absl::InvalidArgumentError(Cat("--memory: ", size.status().message()));
    node = *size;
    from = "--memory";
  } else {
    node = ThisMachinesMemory();
    from = "this machine's memory; --memory for the compute nodes'";
  }
  const int64_t ranks = spec.resources.ranks_per_node;
  return Budget{node / ranks, Cat("the node's ", FormatBytes(node), " (", from, ") / ", ranks,
                                  ranks == 1 ? " rank" : " ranks")};
}

std::vector<std::string> Assumptions(const CampaignSpec& spec, const TrainingPlan& plan) {
  std::vector<std::string> out;
  if (plan.gpu) {
    out.push_back(
        "GPU ranks, one GPU each: bf16 working weights, fp32 master weights, gradients and "
        "optimizer states, as the GPU trainer keeps them");
    out.push_back(plan.fused_attention
                      ? "fused attention: a log-sum-exp per row, no T×T attention weights"
                      : "materialised attention: every layer keeps its B·heads·T·T weights");
  } else {
    out.push_back(
        "CPU ranks, fp32: every figure is what the trainer and the model classes allocate "
        "(train_training_plan_test checks them against the code)");
    out.push_back(
        "not counted: the memory-mapped data shards (paged by the OS), OpenBLAS, OpenMP and "
        "MPI buffers, the allocator's overhead");
  }
  out.push_back(Cat("the save copy is held from a checkpoint step to the end of the next step",
                    spec.checkpoint.async ? "" : " (checkpoint.async = false: none)"));
  for (const std::string& e : plan.estimates) out.push_back(Cat("estimate: ", e));
  return out;
}

std::string Grouped(int64_t n) {
  std::string digits = std::to_string(n), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

std::string Percent(double fraction) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.*f%%", fraction < 0.1 ? 1 : 0, 100 * fraction);
  return buf;
}

std::string Sci(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.4g", v);
  return buf;
}

void PrintText(const CampaignSpec& spec, const TrainingPlan& plan, const Budget& budget,
               const std::vector<std::string>& assumptions) {
  const ModelSpec& m = spec.model;
  std::cout << "campaign " << spec.campaign.name << ": " << ToString(m.arch) << ", " << m.n_layer
            << " layers, d_model " << m.d_model << ", " << m.n_head << " heads";
  if (m.arch == ModelArch::kApertus) std::cout << " (" << m.kv_heads() << " KV), d_ff " << m.d_ff;
  std::cout << ", seq " << m.seq_len << ", vocab " << m.vocab_size << "\n";
  std::cout << "parameters        " << Grouped(plan.parameters) << " (non-embedding "
            << Grouped(plan.non_embedding) << ")\n";
  std::cout << "FLOPs per token   " << Sci(plan.flops_per_token) << " (forward and backward)\n";
  std::cout << "tokens per step   " << Grouped(plan.tokens_per_step) << " ("
            << spec.train.global_batch << " sequences × " << m.seq_len << ")\n";
  std::cout << "ranks             " << plan.world_size << " (" << spec.resources.nodes
            << (spec.resources.nodes == 1 ? " node × " : " nodes × ")
            << spec.resources.ranks_per_node << " per node), "
            << (plan.gpu ? "GPU, bf16" : "CPU, fp32") << "; micro-batch " << spec.train.micro_batch
            << ", " << plan.grad_accum_steps << " per rank per step\n";
  std::cout << "optimizer         " << ToString(plan.optimizer) << ", " << plan.optimizer_states
            << " states per parameter; ZeRO stage " << plan.zero_stage << " (shard "
            << Grouped(plan.shard_elements) << " elements)\n\n";

  const auto row = [&](const char* name, int64_t RankBytes::*field) {
    std::printf("  %-13s", name);
    for (const RankBytes& b : plan.stages) std::printf(" %12s", FormatBytes(b.*field).c_str());
    std::printf("\n");
  };
  std::printf("%-15s", "per rank");
  for (int s = 0; s < 3; ++s) {
    std::printf(" %12s", Cat("stage ", s, s == plan.zero_stage ? " *" : "").c_str());
  }
  std::printf("   (* the campaign's)\n");
  row("weights", &RankBytes::weights);
  row("gradients", &RankBytes::gradients);
  row("optimizer", &RankBytes::optimizer);
  row("activations", &RankBytes::activations);
  row("buffers", &RankBytes::buffers);
  row("save copy", &RankBytes::save_copy);
  std::printf("  %-13s", "total");
  for (const RankBytes& b : plan.stages) std::printf(" %12s", FormatBytes(b.total()).c_str());
  std::printf("\n\n");
  std::fflush(stdout);

  const int64_t total = plan.memory().total();
  if (budget.bytes > 0) {
    std::cout << "available         " << FormatBytes(budget.bytes) << " per rank (" << budget.source
              << ")\n";
    std::cout << "fits              " << (total <= budget.bytes ? "yes" : "no") << ": stage "
              << plan.zero_stage << " needs " << FormatBytes(total) << ", "
              << Percent(static_cast<double>(total) / static_cast<double>(budget.bytes))
              << " of it\n";
  } else {
    std::cout << "fits              unknown: name the GPU's memory with --gpu-memory (a size, or "
                 "h100, h200, gh200, …)\n";
  }
  std::cout << "assumptions:\n";
  for (const std::string& a : assumptions) std::cout << "  - " << a << "\n";
}

nlohmann::json BytesJson(const RankBytes& b) {
  return {{"weights", b.weights},     {"gradients", b.gradients},
          {"optimizer", b.optimizer}, {"activations", b.activations},
          {"buffers", b.buffers},     {"save_copy", b.save_copy},
          {"total", b.total()}};
}

void PrintJson(const CampaignSpec& spec, const TrainingPlan& plan, const Budget& budget,
               const std::vector<std::string>& assumptions) {
  nlohmann::json stages = nlohmann::json::array();
  for (const RankBytes& b : plan.stages) stages.push_back(BytesJson(b));
  nlohmann::json out = {
      {"campaign", spec.campaign.name},
      {"arch", std::string(ToString(plan.arch))},
      {"device", plan.gpu ? "gpu" : "cpu"},
      {"parameters", plan.parameters},
      {"non_embedding_parameters", plan.non_embedding},
      {"flops_per_token", plan.flops_per_token},
      {"tokens_per_step", plan.tokens_per_step},
      {"world_size", plan.world_size},
      {"micro_batch", spec.train.micro_batch},
      {"grad_accum_steps", plan.grad_accum_steps},
      {"optimizer", std::string(ToString(plan.optimizer))},
      {"optimizer_states", plan.optimizer_states},
      {"zero_stage", plan.zero_stage},
      {"shard_elements", plan.shard_elements},
      {"per_rank", BytesJson(plan.memory())},
      {"per_rank_by_stage", stages},
      {"assumptions", assumptions},
  };
  if (budget.bytes > 0) {
    out["available_per_rank"] = budget.bytes;
    out["available_from"] = budget.source;
    out["fits"] = plan.memory().total() <= budget.bytes;
  } else {
    out["fits"] = nullptr;
  }
  std::cout << out.dump(2) << "\n";
}

int RunPlan(const PlanOptions& opts) {
  SpecParseOptions parse;
  parse.check_paths = false;  // the plan does not depend on the data or checkpoint paths
  SpecParseResult result = LoadCampaignSpec(opts.file, parse);
  if (!result.ok()) {
    for (const SpecError& e : result.errors) std::cerr << e.ToString() << "\n";
    return kExitInvalid;
  }
  const CampaignSpec& spec = *result.spec;
  absl::StatusOr<TrainingPlan> plan = train::PlanTraining(spec);
  if (!plan.ok()) {
    std::cerr << opts.file << ": " << plan.status().message() << "\n";
    return kExitInvalid;
  }
  absl::StatusOr<Budget> budget = BudgetOf(spec, opts);
  if (!budget.ok()) {
    std::cerr << "belay plan: " << budget.status().message() << "\n";
    return kExitInvalid;
  }
  const std::vector<std::string> assumptions = Assumptions(spec, *plan);
  if (opts.json) {
    PrintJson(spec, *plan, *budget, assumptions);
  } else {
    PrintText(spec, *plan, *budget, assumptions);
  }
  return kExitOk;
}

}  // namespace

void AddPlanCommand(CLI::App& app, int* exit_code) {
  auto opts = std::make_shared<PlanOptions>();
  CLI::App* cmd = app.add_subcommand(
      "plan",
      "What a campaign asks of each rank: parameters, FLOPs per token, tokens per step, and "
      "memory per ZeRO stage against what a rank has; exits 2 on an invalid file");
  cmd->add_option("FILE", opts->file, "campaign file (TOML)")->required();
  cmd->add_flag("--json", opts->json, "print one JSON object");
  cmd->add_option("--memory", opts->memory,
                  "memory of a node for CPU ranks, shared by its ranks (e.g. 256GiB, 512GB; "
                  "default: this machine's)");
  std::string names;
  for (const train::NamedGpu& g : train::KnownGpus()) {
    names += Cat(names.empty() ? "" : ", ", g.name, " ", FormatBytes(g.bytes));
  }
  cmd->add_option("--gpu-memory", opts->gpu_memory,
                  Cat("memory of one GPU for GPU ranks: a size (e.g. 80GiB) or a name: ", names));
  cmd->callback([opts, exit_code] { *exit_code = RunPlan(*opts); });
}

}  // namespace belay::cli
