// Writes a CampaignSpec back out as a complete campaign file (the "effective" spec).
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "common/campaign_spec.h"
#include "common/duration.h"
#include "common/strings.h"

namespace belay {
namespace {

std::string TomlString(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += Cat("\\", c);
    } else if (u < 0x20 || u == 0x7f) {
      out += absl::StrFormat("\\u%04x", u);
    } else {
      out.push_back(c);
    }
  }
  return out + "\"";
}

std::string TomlStrings(const std::vector<std::string>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) out += Cat(i ? ", " : "", TomlString(v[i]));
  return out + "]";
}

std::string Bool(bool b) { return b ? "true" : "false"; }

std::string Duration(std::chrono::seconds d) { return TomlString(FormatDuration(d)); }

}  // namespace

std::string FormatCampaignSpec(const CampaignSpec& s) {
  std::string o;
  auto kv = [&o](std::string_view key, const std::string& value) {
    o += Cat(key, " = ", value, "\n");
  };
  auto num = [](auto v) { return Cat(v); };

  o += "[campaign]\n";
  kv("name", TomlString(s.campaign.name));
  if (!s.campaign.description.empty()) kv("description", TomlString(s.campaign.description));

  o += "\n[model]\n";
  kv("arch", TomlString(ToString(s.model.arch)));
  kv("n_layer", num(s.model.n_layer));
  kv("n_head", num(s.model.n_head));
  kv("d_model", num(s.model.d_model));
  kv("seq_len", num(s.model.seq_len));
  kv("vocab_size", num(s.model.vocab_size));
  if (s.model.arch == ModelArch::kApertus) {
    const ModelSpec& m = s.model;
    kv("n_kv_head", num(m.kv_heads()));
    kv("d_ff", num(m.d_ff));
    kv("rope_theta", num(m.rope_theta));
    if (const std::optional<RopeScalingSpec>& rs = m.rope_scaling) {
      kv("rope_scaling", Cat("{ factor = ", rs->factor, ", low_freq_factor = ", rs->low_freq_factor,
                             ", high_freq_factor = ", rs->high_freq_factor,
                             ", original_context = ", rs->original_context, " }"));
    }
    kv("qk_norm", Bool(m.qk_norm));
    kv("activation", TomlString(ToString(m.activation)));
    kv("tie_embeddings", Bool(m.tie_embeddings));
    kv("norm_eps", num(m.norm_eps));
  }

  o += "\n[data]\n";
  kv("format", TomlString(ToString(s.data.format)));
  kv("train", TomlStrings(s.data.train));
  if (!s.data.val.empty()) kv("val", TomlStrings(s.data.val));
  kv("shuffle", Bool(s.data.shuffle));
  if (s.data.document_masking) {
    kv("document_masking", Bool(true));
    kv("eod_token", num(s.data.eod_token));
  }

  const TrainSpec& t = s.train;
  o += "\n[train]\n";
  if (t.total_steps) kv("total_steps", num(*t.total_steps));
  if (t.total_tokens) kv("total_tokens", num(*t.total_tokens));
  kv("micro_batch", num(t.micro_batch));
  kv("global_batch", num(t.global_batch));
  kv("lr", num(t.lr));
  kv("lr_schedule", TomlString(ToString(t.lr_schedule)));
  kv("warmup_steps", num(t.warmup_steps));
  kv("min_lr", num(t.min_lr));
  if (t.lr_schedule == LrSchedule::kWsd) {
    kv("cooldown_steps", num(t.cooldown_steps));
    kv("cooldown", TomlString(ToString(t.cooldown)));
  }
  kv("weight_decay", num(t.weight_decay));
  kv("beta1", num(t.beta1));
  kv("beta2", num(t.beta2));
  kv("eps", num(t.eps));
  kv("grad_clip", num(t.grad_clip));
  kv("seed", num(t.seed));
  kv("dtype", TomlString(ToString(t.dtype)));
  kv("zero_stage", num(t.zero_stage));
  if (t.goldfish) kv("goldfish", Cat("{ k = ", t.goldfish->k, ", h = ", t.goldfish->h, " }"));
  kv("eval_every", num(t.eval_every));
  kv("eval_batches", num(t.eval_batches));

  const OptimizerSpec& opt = s.optimizer;
  o += "\n[optimizer]\n";
  kv("name", TomlString(ToString(opt.name)));
  if (opt.name == OptimizerKind::kAdemamix) {
    kv("beta3", num(opt.beta3));
    kv("alpha", num(opt.alpha));
    kv("alpha_warmup_steps", num(opt.alpha_warmup_steps));
    kv("beta3_warmup_steps", num(opt.beta3_warmup_steps));
  }

  const CheckpointSpec& c = s.checkpoint;
  o += "\n[checkpoint]\n";
  kv("dir", TomlString(c.dir));
  kv("every_steps", c.every_steps ? num(*c.every_steps) : TomlString("auto"));
  kv("keep_last", num(c.keep_last));
  kv("keep_every", num(c.keep_every));
  kv("async", Bool(c.async));

  const ResourcesSpec& r = s.resources;
  o += "\n[resources]\n";
  kv("scheduler", TomlString(ToString(r.scheduler)));
  kv("nodes", num(r.nodes));
  kv("ranks_per_node", num(r.ranks_per_node));
  kv("gpus_per_node", num(r.gpus_per_node));
  if (r.scheduler == SchedulerKind::kSlurm) {
    if (!r.partition.empty()) kv("partition", TomlString(r.partition));
    if (!r.account.empty()) kv("account", TomlString(r.account));
    if (r.time_limit) kv("time_limit", Duration(*r.time_limit));
    if (!r.sbatch_options.empty()) kv("sbatch_options", TomlStrings(r.sbatch_options));
    kv("min_nodes", num(r.min_nodes_or_nodes()));
    kv("presubmit", Bool(r.presubmit));
    kv("pre_limit_signal", Duration(r.pre_limit_signal));
  }

  const RestartSpec& x = s.restart;
  o += "\n[restart]\n";
  kv("max_restarts", num(x.max_restarts));
  kv("backoff", Cat("{ initial = ", Duration(x.backoff.initial),
                    ", max = ", Duration(x.backoff.max), ", jitter = ", x.backoff.jitter, " }"));
  kv("hang_timeout", x.hang_timeout ? Duration(*x.hang_timeout) : TomlString("auto"));
  kv("nan_policy", TomlString(ToString(x.nan_policy)));
  kv("max_rollbacks", num(x.max_rollbacks));
  kv("max_node_failures", num(x.max_node_failures));
  kv("exclude_failed_nodes", Bool(x.exclude_failed_nodes));
  return o;
}

}  // namespace belay
