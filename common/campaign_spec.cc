// Campaign file parsing and validation: per-field reads first, then the rules that tie
// fields together, then (optionally) the file system.
#include "common/campaign_spec.h"

#include <fcntl.h>
#include <glob.h>
#include <unistd.h>

#include <fstream>
#include <limits>
#include <sstream>
#include <system_error>

#include "common/duration.h"
#include "common/strings.h"
#include "common/toml_bounds.h"
#include "common/toml_reader.h"

namespace belay {
namespace {

using std::chrono::seconds;
constexpr int64_t kBig = int64_t{1} << 50;  // Upper bound for step and token counts.
constexpr toml::source_position kTop{1, 1};

bool ValidName(std::string_view name) {
  auto alnum = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
  };
  if (name.empty() || name.size() > 64 || !alnum(name[0])) return false;
  for (char c : name) {
    if (!alnum(c) && c != '.' && c != '_' && c != '-') return false;
  }
  return true;
}

template <typename T>
void Set(T* field, const std::optional<T>& value) {
  if (value) *field = *value;
}

template <typename E>
void SetChoice(E* field, const std::optional<size_t>& index) {
  if (index) *field = static_cast<E>(*index);
}

void ReadCampaign(TomlReader r, CampaignSection* c) {
  if (auto name = r.String("name", true, 64)) {
    if (ValidName(*name)) {
      c->name = *name;
    } else {
      r.errors()->Add(r.PosOf("name"), r.KeyPath("name"),
                      Cat("\"", *name,
                          "\" is not a valid name; allowed: letters, digits, '.', '_' "
                          "and '-', starting with a letter or digit, at most 64 bytes"));
    }
  }
  Set(&c->description, r.String("description", false));
  r.ReportUnknownKeys();
}

// [model.rope_scaling]: each key optional, defaulting to Llama 3's values.
void ReadRopeScaling(TomlReader r, ModelSpec* m) {
  if (!r.present()) return;
  RopeScalingSpec s;
  Set(&s.factor, r.Float("factor", 1.0, 1024.0, false));
  std::optional<double> low =
      r.Float("low_freq_factor", 0.0, 1024.0, false, /*min_exclusive=*/true);
  std::optional<double> high =
      r.Float("high_freq_factor", 0.0, 1024.0, false, /*min_exclusive=*/true);
  Set(&s.original_context, r.Int("original_context", 1, 1 << 20, false));
  Set(&s.low_freq_factor, low);
  Set(&s.high_freq_factor, high);
  // The scaling interpolates between the two wavelength bounds and divides by their gap.
  if ((low || !r.has("low_freq_factor")) && (high || !r.has("high_freq_factor")) &&
      s.high_freq_factor <= s.low_freq_factor) {
    r.errors()->Add(r.PosOf("high_freq_factor"), r.KeyPath("high_freq_factor"),
                    Cat(s.high_freq_factor, " is not above model.rope_scaling.low_freq_factor = ",
                        s.low_freq_factor, "; allowed: > low_freq_factor"));
  }
  r.ReportUnknownKeys();
  m->rope_scaling = s;
}

// The [model] keys only the Apertus model reads.
constexpr std::string_view kApertusKeys[] = {"n_kv_head",      "d_ff",    "rope_theta",
                                             "rope_scaling",   "qk_norm", "activation",
                                             "tie_embeddings", "norm_eps"};

// Shape rules of the Apertus model, on top of those every model has.
void CheckApertusShape(TomlReader& r, ModelSpec* m) {
  if (!r.has("n_kv_head")) m->n_kv_head = m->n_head;  // no grouping unless asked
  if (m->n_kv_head > 0 && m->n_head > 0 && m->n_head % m->n_kv_head != 0) {
    r.errors()->Add(r.PosOf("n_kv_head"), r.KeyPath("n_kv_head"),
                    Cat(m->n_kv_head, " does not divide model.n_head = ", m->n_head,
                        "; allowed: a divisor of n_head"));
  }
  if (m->n_head > 0 && m->d_model > 0 && m->d_model % m->n_head == 0 &&
      (m->d_model / m->n_head) % 2 != 0) {
    r.errors()->Add(r.PosOf("d_model"), r.KeyPath("d_model"),
                    Cat(m->d_model, " / model.n_head = ", m->n_head, " is a head size of ",
                        m->d_model / m->n_head,
                        "; arch = \"apertus\" needs an even head size (RoPE rotates pairs)"));
  }
}

// Returns the architecture, or nullopt when model.arch is rejected: the rules that depend on
// it are then not checked.
std::optional<ModelArch> ReadModel(TomlReader r, ModelSpec* m) {
  std::optional<size_t> arch = r.Choice("arch", {"gpt2", "apertus"}, false);
  SetChoice(&m->arch, arch);
  const bool arch_known = arch || !r.has("arch");
  const bool apertus = m->arch == ModelArch::kApertus;
  Set(&m->n_layer, r.Int("n_layer", 1, 1024, true));
  Set(&m->n_head, r.Int("n_head", 1, 1024, true));
  Set(&m->d_model, r.Int("d_model", 1, 65536, true));
  Set(&m->seq_len, r.Int("seq_len", 1, 1 << 20, true));
  Set(&m->vocab_size, r.Int("vocab_size", 2, 1 << 24, true));
  Set(&m->n_kv_head, r.Int("n_kv_head", 1, 1024, false));
  Set(&m->d_ff, r.Int("d_ff", 1, 1 << 20, apertus));
  Set(&m->rope_theta, r.Float("rope_theta", 0.0, 1e12, false, /*min_exclusive=*/true));
  ReadRopeScaling(r.Table("rope_scaling", false), m);
  Set(&m->qk_norm, r.Bool("qk_norm"));
  SetChoice(&m->activation, r.Choice("activation", {"xielu", "swiglu", "gelu"}, false));
  Set(&m->tie_embeddings, r.Bool("tie_embeddings"));
  Set(&m->norm_eps, r.Float("norm_eps", 0.0, 1.0, false, /*min_exclusive=*/true,
                            /*max_exclusive=*/true));
  if (m->n_head > 0 && m->d_model > 0 && m->d_model % m->n_head != 0) {
    r.errors()->Add(r.PosOf("d_model"), r.KeyPath("d_model"),
                    Cat(m->d_model, " is not divisible by model.n_head = ", m->n_head,
                        "; allowed: a multiple of n_head"));
  }
  if (apertus) {
    CheckApertusShape(r, m);
  } else if (arch_known) {
    for (std::string_view key : kApertusKeys) {
      if (r.has(key)) {
        r.errors()->Add(r.PosOf(key), r.KeyPath(key),
                        Cat("only for arch = \"apertus\" (it is \"", ToString(m->arch), "\")"));
      }
    }
  }
  r.ReportUnknownKeys();
  return arch_known ? std::optional(m->arch) : std::nullopt;
}

// `arch` is nullopt when model.arch was rejected; `vocab_size` 0 when model.vocab_size was.
void ReadData(TomlReader r, std::optional<ModelArch> arch, int64_t vocab_size, DataSpec* d) {
  SetChoice(&d->format, r.Choice("format", {"llmc", "megatron"}, false));
  Set(&d->train, r.StringList("train", true));
  Set(&d->val, r.StringList("val", false));
  Set(&d->shuffle, r.Bool("shuffle"));
  std::optional<bool> masking = r.Bool("document_masking");
  std::optional<int64_t> eod = r.Int("eod_token", 0, (1 << 24) - 1, false);
  Set(&d->document_masking, masking);
  if (d->document_masking) {
    if (arch == ModelArch::kGpt2) {
      r.errors()->Add(r.PosOf("document_masking"), r.KeyPath("document_masking"),
                      "true needs model.arch = \"apertus\" (it is \"gpt2\"; the GPT-2 model "
                      "has no document mask)");
    }
    if (!r.has("eod_token")) {
      r.errors()->Add(r.PosOf("document_masking"), r.KeyPath("eod_token"),
                      "missing: document_masking = true needs data.eod_token");
    } else if (eod && vocab_size > 0 && *eod >= vocab_size) {
      r.errors()->Add(r.PosOf("eod_token"), r.KeyPath("eod_token"),
                      Cat(*eod, " is not a token of the vocabulary (model.vocab_size = ",
                          vocab_size, "); allowed: 0..", vocab_size - 1));
    } else {
      Set(&d->eod_token, eod);
    }
  } else if (r.has("eod_token") && (masking || !r.has("document_masking"))) {
    r.errors()->Add(r.PosOf("eod_token"), r.KeyPath("eod_token"),
                    "only applies to document_masking = true (it is false)");
  }
  r.ReportUnknownKeys();
}

void ReadTrain(TomlReader r, TrainSpec* t) {
  t->total_steps = r.Int("total_steps", 1, kBig, false);
  t->total_tokens = r.Int("total_tokens", 1, kBig, false);
  Set(&t->micro_batch, r.Int("micro_batch", 1, 1 << 16, true));
  Set(&t->global_batch, r.Int("global_batch", 1, 1 << 24, true));
  Set(&t->lr, r.Float("lr", 0.0, 10.0, true, /*min_exclusive=*/true));
  SetChoice(&t->lr_schedule, r.Choice("lr_schedule", {"cosine", "wsd"}, false));
  Set(&t->warmup_steps, r.Int("warmup_steps", 0, kBig, false));
  Set(&t->min_lr, r.Float("min_lr", 0.0, 10.0, false));
  std::optional<int64_t> cooldown_steps = r.Int("cooldown_steps", 1, kBig, false);
  std::optional<size_t> cooldown = r.Choice("cooldown", {"linear", "1-sqrt"}, false);
  Set(&t->cooldown_steps, cooldown_steps);
  SetChoice(&t->cooldown, cooldown);
  Set(&t->weight_decay, r.Float("weight_decay", 0.0, 1.0, false));
  Set(&t->beta1, r.Float("beta1", 0.0, 1.0, false));
  Set(&t->beta2, r.Float("beta2", 0.0, 1.0, false));
  Set(&t->eps, r.Float("eps", 0.0, 1.0, false, /*min_exclusive=*/true));
  Set(&t->grad_clip, r.Float("grad_clip", 0.0, 1e6, false));
  if (auto seed = r.Int("seed", 0, std::numeric_limits<int64_t>::max(), false)) {
    t->seed = static_cast<uint64_t>(*seed);
  }
  SetChoice(&t->dtype, r.Choice("dtype", {"fp32", "bf16"}, false, {"fp8"}));
  if (auto stage = r.Int("zero_stage", 0, 3, false)) {
    if (*stage == 3) {
      r.errors()->Add(r.PosOf("zero_stage"), r.KeyPath("zero_stage"),
                      "3 is not supported yet; allowed: 0, 1, 2");
    } else {
      t->zero_stage = static_cast<int>(*stage);
    }
  }
  if (r.has("goldfish")) {
    TomlReader g = r.Table("goldfish", false);
    if (g.present()) {
      GoldfishSpec gs;
      std::optional<int64_t> k = g.Int("k", 2, 1 << 20, true);
      std::optional<int64_t> h = g.Int("h", 1, 1 << 20, true);
      g.ReportUnknownKeys();
      if (k && h) {
        gs.k = *k;
        gs.h = *h;
        t->goldfish = gs;
      }
    }
  } else {
    r.Table("goldfish", false);  // Registers the key as known.
  }
  Set(&t->eval_every, r.Int("eval_every", 0, kBig, false));
  Set(&t->eval_batches, r.Int("eval_batches", 1, 1 << 20, false));

  // Rules local to [train].
  if (t->total_steps && t->total_tokens) {
    r.errors()->Add(r.PosOf("total_tokens"), r.KeyPath("total_tokens"),
                    "set together with train.total_steps; allowed: exactly one of the two");
  } else if (!t->total_steps && !t->total_tokens && r.present() && !r.has("total_steps") &&
             !r.has("total_tokens")) {
    r.errors()->Add(r.PosOf("total_steps"), r.KeyPath("total_steps"),
                    "missing: set train.total_steps or train.total_tokens");
  }
  if (t->micro_batch > 0 && t->global_batch > 0 && t->global_batch % t->micro_batch != 0) {
    r.errors()->Add(r.PosOf("global_batch"), r.KeyPath("global_batch"),
                    Cat(t->global_batch, " is not divisible by train.micro_batch = ",
                        t->micro_batch, "; allowed: a multiple of micro_batch"));
  }
  if (t->lr > 0 && t->min_lr > t->lr) {
    r.errors()->Add(r.PosOf("min_lr"), r.KeyPath("min_lr"),
                    Cat(t->min_lr, " is above train.lr = ", t->lr, "; allowed: 0..lr"));
  }
  if (t->lr_schedule == LrSchedule::kWsd) {
    if (!r.has("cooldown_steps")) {
      r.errors()->Add(r.PosOf("lr_schedule"), r.KeyPath("cooldown_steps"),
                      "missing: lr_schedule = \"wsd\" needs train.cooldown_steps");
    }
  } else {
    for (std::string_view key : {"cooldown_steps", "cooldown"}) {
      if (r.has(key)) {
        r.errors()->Add(r.PosOf(key), r.KeyPath(key),
                        "only applies to lr_schedule = \"wsd\" (the schedule is \"cosine\")");
      }
    }
  }
  r.ReportUnknownKeys();
}

void ReadOptimizer(TomlReader r, OptimizerSpec* o) {
  std::optional<size_t> name = r.Choice("name", {"adamw", "ademamix"}, false);
  SetChoice(&o->name, name);
  Set(&o->beta3, r.Float("beta3", 0.0, 1.0, false, /*min_exclusive=*/true,
                         /*max_exclusive=*/true));
  Set(&o->alpha, r.Float("alpha", 0.0, 1000.0, false));
  Set(&o->alpha_warmup_steps, r.Int("alpha_warmup_steps", 0, kBig, false));
  Set(&o->beta3_warmup_steps, r.Int("beta3_warmup_steps", 0, kBig, false));
  if (o->name == OptimizerKind::kAdamW && (name || !r.has("name"))) {
    for (std::string_view key : {"beta3", "alpha", "alpha_warmup_steps", "beta3_warmup_steps"}) {
      if (r.has(key)) {
        r.errors()->Add(r.PosOf(key), r.KeyPath(key),
                        "only applies to optimizer.name = \"ademamix\" (it is \"adamw\")");
      }
    }
  }
  r.ReportUnknownKeys();
}

void ReadCheckpoint(TomlReader r, CheckpointSpec* c) {
  Set(&c->dir, r.String("dir", true));
  if (auto every = r.IntOrAuto("every_steps", 1, kBig)) {
    c->every_steps = every->first ? std::nullopt : std::optional<int64_t>(every->second);
  } else if (!r.has("every_steps")) {
    c->every_steps = 1000;
  }
  Set(&c->keep_last, r.Int("keep_last", 1, 1 << 20, false));
  Set(&c->keep_every, r.Int("keep_every", 0, kBig, false));
  Set(&c->async, r.Bool("async"));
  if (c->keep_every > 0 && c->every_steps && c->keep_every % *c->every_steps != 0) {
    r.errors()->Add(r.PosOf("keep_every"), r.KeyPath("keep_every"),
                    Cat(c->keep_every, " is not a multiple of checkpoint.every_steps = ",
                        *c->every_steps, ", so no checkpoint would be kept by it"));
  }
  r.ReportUnknownKeys();
}

// What belay sets itself, by long and short name: a user's value would contradict it.
const char* const kManagedSbatch[] = {"--exclude",
                                      "-x",
                                      "--comment",
                                      "--requeue",
                                      "--no-requeue",
                                      "--signal",
                                      "--nodes",
                                      "-N",
                                      "--ntasks",
                                      "-n",
                                      "--ntasks-per-node",
                                      "--job-name",
                                      "-J",
                                      "--dependency",
                                      "-d",
                                      "--output",
                                      "-o",
                                      "--error",
                                      "-e",
                                      "--time",
                                      "-t",
                                      "--partition",
                                      "-p",
                                      "--account",
                                      "-A"};

// The longest pre_limit_signal Slurm can carry (its warning time is 16 bits of seconds),
// rounded down to whole hours.
constexpr seconds kMaxPreLimitSignal{18 * 3600};

void ReadResources(TomlReader r, ResourcesSpec* s) {
  SetChoice(&s->scheduler, r.Choice("scheduler", {"local", "slurm"}, false));
  Set(&s->nodes, r.Int("nodes", 1, 100000, false));
  Set(&s->min_nodes, r.Int("min_nodes", 1, 100000, false));
  Set(&s->ranks_per_node, r.Int("ranks_per_node", 1, 1024, false));
  Set(&s->gpus_per_node, r.Int("gpus_per_node", 0, 64, false));
  Set(&s->partition, r.String("partition", false, 256));
  Set(&s->account, r.String("account", false, 256));
  s->time_limit = r.Duration("time_limit", seconds(60), seconds(365LL * 86400));
  if (s->time_limit && s->time_limit->count() % 60 != 0) {
    r.errors()->Add(r.PosOf("time_limit"), r.KeyPath("time_limit"),
                    Cat(FormatDuration(*s->time_limit),
                        " is not a whole number of minutes; Slurm's time limits are minutes"));
    s->time_limit.reset();
  }
  if (auto opts = r.StringList("sbatch_options", false)) {
    for (const std::string& o : *opts) {
      if (absl::StatusOr<SbatchOption> ok = ParseSbatchOption(o); ok.ok()) {
        s->sbatch_options.push_back(o);
      } else {
        r.errors()->Add(r.PosOf("sbatch_options"), r.KeyPath("sbatch_options"),
                        std::string(ok.status().message()));
      }
    }
  }
  if (auto spare = r.Int("spare_nodes", 0, 100000, false); spare && *spare > 0) {
    r.errors()->Add(
        r.PosOf("spare_nodes"), r.KeyPath("spare_nodes"),
        Cat(*spare,
            " spare nodes: not supported yet; belay holds no spare nodes (resources.min_nodes "
            "lets a campaign go on with fewer nodes); allowed: 0"));
  }
  Set(&s->presubmit, r.Bool("presubmit"));
  Set(&s->pre_limit_signal, r.Duration("pre_limit_signal", seconds(0), kMaxPreLimitSignal));

  if (s->scheduler == SchedulerKind::kLocal) {
    for (std::string_view key : {"partition", "account", "time_limit", "sbatch_options",
                                 "spare_nodes", "presubmit", "min_nodes"}) {
      if (r.has(key)) {
        r.errors()->Add(r.PosOf(key), r.KeyPath(key),
                        "only applies to resources.scheduler = \"slurm\" (it is \"local\")");
      }
    }
    // Nothing to signal before: local jobs have no time limit. (The default, written out,
    // passes: earlier belayd versions wrote it into every campaign's effective spec.)
    if (r.has("pre_limit_signal") && s->pre_limit_signal != ResourcesSpec().pre_limit_signal) {
      r.errors()->Add(
          r.PosOf("pre_limit_signal"), r.KeyPath("pre_limit_signal"),
          "only applies to resources.scheduler = \"slurm\" (it is \"local\"; local jobs "
          "have no time limit to signal before)");
    }
    if (s->nodes != 1) {
      r.errors()->Add(r.PosOf("nodes"), r.KeyPath("nodes"),
                      Cat(s->nodes, " nodes with the local scheduler; allowed: 1"));
    }
  }
  if (!r.has("min_nodes")) s->min_nodes = s->nodes;  // never shrink unless asked
  if (s->min_nodes > s->nodes) {
    r.errors()->Add(r.PosOf("min_nodes"), r.KeyPath("min_nodes"),
                    Cat(s->min_nodes, " is more than resources.nodes = ", s->nodes,
                        "; allowed: 1..", s->nodes));
  }
  if (s->gpus_per_node > 0 && s->ranks_per_node != s->gpus_per_node) {
    r.errors()->Add(r.PosOf("ranks_per_node"), r.KeyPath("ranks_per_node"),
                    Cat(s->ranks_per_node, " ranks with resources.gpus_per_node = ",
                        s->gpus_per_node, "; allowed: one rank per GPU"));
  }
  if (s->time_limit && s->pre_limit_signal >= *s->time_limit) {
    r.errors()->Add(
        r.PosOf("pre_limit_signal"), r.KeyPath("pre_limit_signal"),
        Cat(FormatDuration(s->pre_limit_signal),
            " is not shorter than resources.time_limit = ", FormatDuration(*s->time_limit)));
  }
  r.ReportUnknownKeys();
}

void ReadRestart(TomlReader r, RestartSpec* s) {
  Set(&s->max_restarts, r.Int("max_restarts", 0, 100000, false));
  {
    TomlReader b = r.Table("backoff", false);
    Set(&s->backoff.initial, b.Duration("initial", seconds(0), seconds(86400)));
    Set(&s->backoff.max, b.Duration("max", seconds(0), seconds(7 * 86400)));
    Set(&s->backoff.jitter, b.Float("jitter", 0.0, 1.0, false));
    if (s->backoff.initial > s->backoff.max) {
      b.errors()->Add(
          b.PosOf("max"), b.KeyPath("max"),
          Cat(FormatDuration(s->backoff.max),
              " is shorter than restart.backoff.initial = ", FormatDuration(s->backoff.initial)));
    }
    b.ReportUnknownKeys();
  }
  if (auto hang = r.DurationOrAuto("hang_timeout", seconds(10), seconds(7 * 86400))) {
    s->hang_timeout = hang->first ? std::nullopt : std::optional<seconds>(hang->second);
  }
  SetChoice(&s->nan_policy, r.Choice("nan_policy", {"rollback", "stop"}, false));
  Set(&s->max_rollbacks, r.Int("max_rollbacks", 0, 100000, false));
  Set(&s->max_node_failures, r.Int("max_node_failures", 0, 100000, false));
  Set(&s->exclude_failed_nodes, r.Bool("exclude_failed_nodes"));
  r.ReportUnknownKeys();
}

// Rules that span sections. Positions point at the field a user would change.
void CheckCrossSection(CampaignSpec& s, TomlReader& train, TomlReader& data, TomlReader& resources,
                       SpecErrorSink* errors) {
  // The dtype follows the hardware unless the file sets it: fp32 on CPU, bf16 on GPUs.
  if (!train.has("dtype") && s.resources.gpus_per_node > 0) s.train.dtype = DType::kBf16;
  const TrainSpec& t = s.train;
  int64_t world = s.resources.world_size();
  if (t.micro_batch > 0 && t.global_batch > 0 && t.global_batch % t.micro_batch == 0 &&
      t.global_batch % (t.micro_batch * world) != 0) {
    errors->Add(train.PosOf("global_batch"), train.KeyPath("global_batch"),
                Cat(t.global_batch, " is not divisible by train.micro_batch × ranks = ",
                    t.micro_batch, " × ", world, " = ", t.micro_batch * world,
                    "; allowed: a multiple of ", t.micro_batch * world));
  }
  // The smallest size an attempt may shrink to must itself be a valid world size (sizes in
  // between that are not are skipped when belay shrinks).
  const int64_t min_world = s.resources.min_nodes_or_nodes() * s.resources.ranks_per_node;
  if (s.resources.min_nodes > 0 && s.resources.min_nodes < s.resources.nodes && t.micro_batch > 0 &&
      t.global_batch > 0 && t.global_batch % t.micro_batch == 0 &&
      t.global_batch % (t.micro_batch * world) == 0 &&
      t.global_batch % (t.micro_batch * min_world) != 0) {
    errors->Add(resources.PosOf("min_nodes"), resources.KeyPath("min_nodes"),
                Cat(s.resources.min_nodes, " nodes are ", min_world,
                    " ranks, and train.global_batch = ", t.global_batch,
                    " is not divisible by train.micro_batch × ", min_world, " = ",
                    t.micro_batch * min_world));
  }
  int64_t total = s.total_steps();
  if (total > 0) {
    int64_t reserved = t.warmup_steps + (t.lr_schedule == LrSchedule::kWsd ? t.cooldown_steps : 0);
    if (reserved > total) {
      errors->Add(train.PosOf("warmup_steps"), train.KeyPath("warmup_steps"),
                  Cat("warmup", t.lr_schedule == LrSchedule::kWsd ? " + cooldown" : "", " = ",
                      reserved, " steps is more than the ", total, " steps of training"));
    }
  }
  if (t.goldfish && s.model.seq_len > 0 && t.goldfish->h > s.model.seq_len) {
    errors->Add(train.PosOf("goldfish"), train.KeyPath("goldfish.h"),
                Cat(t.goldfish->h, " is longer than model.seq_len = ", s.model.seq_len,
                    "; allowed: 1..", s.model.seq_len));
  }
  if (t.eval_every > 0 && s.data.val.empty() && data.present()) {
    errors->Add(train.PosOf("eval_every"), train.KeyPath("eval_every"),
                "evaluation needs validation shards; set data.val or eval_every = 0");
  }
  if (t.dtype == DType::kBf16 && s.resources.gpus_per_node == 0) {
    errors->Add(train.PosOf("dtype"), train.KeyPath("dtype"),
                "\"bf16\" needs GPUs (resources.gpus_per_node = 0); allowed on CPU: \"fp32\"");
  }
  if (s.resources.gpus_per_node > 0 && t.dtype == DType::kFp32 && train.has("dtype")) {
    errors->Add(train.PosOf("dtype"), train.KeyPath("dtype"),
                "\"fp32\" training on GPUs is not supported; allowed with GPUs: \"bf16\"");
  }
}

// What the GPU trainer cannot run yet, refused at the key that asks for it.
void CheckGpuSupport(const CampaignSpec& s, TomlReader& model, TomlReader& optimizer,
                     SpecErrorSink* errors) {
  if (s.resources.gpus_per_node == 0) return;
  if (s.model.arch == ModelArch::kApertus) {
    errors->Add(model.PosOf("arch"), model.KeyPath("arch"),
                "\"apertus\" is not supported on GPUs yet (resources.gpus_per_node > 0); "
                "allowed with GPUs: \"gpt2\"");
  }
  if (s.optimizer.name == OptimizerKind::kAdemamix) {
    errors->Add(optimizer.PosOf("name"), optimizer.KeyPath("name"),
                "\"ademamix\" is not supported on GPUs yet (resources.gpus_per_node > 0; the "
                "GPU update is AdamW); allowed with GPUs: \"adamw\"");
  }
}

std::string Resolve(const std::filesystem::path& base, const std::string& p) {
  std::filesystem::path path(p);
  if (path.is_relative()) path = base / path;
  return path.lexically_normal().string();
}

void CheckPaths(const CampaignSpec& s, TomlReader& data, TomlReader& ckpt, SpecErrorSink* errors) {
  auto check_globs = [&](const std::vector<std::string>& globs, std::string_view key) {
    for (const std::string& pattern : globs) {
      glob_t g{};
      int rc = ::glob(pattern.c_str(), GLOB_NOSORT, nullptr, &g);
      size_t n = rc == 0 ? g.gl_pathc : 0;
      globfree(&g);
      if (n == 0) {
        errors->Add(data.PosOf(key), data.KeyPath(key), Cat("\"", pattern, "\" matches no file"));
      }
    }
  };
  check_globs(s.data.train, "train");
  check_globs(s.data.val, "val");
  if (!s.checkpoint.dir.empty()) {
    std::error_code ec;
    std::filesystem::path p(s.checkpoint.dir);
    if (std::filesystem::exists(p, ec) && !std::filesystem::is_directory(p, ec)) {
      errors->Add(ckpt.PosOf("dir"), ckpt.KeyPath("dir"),
                  Cat("\"", p.string(), "\" exists and is not a directory"));
      return;
    }
    while (!std::filesystem::exists(p, ec) && p.has_parent_path() && p != p.parent_path()) {
      p = p.parent_path();
    }
    // (AT_EACCESS: with the thread's effective, filesystem rights, which a root belayd sets
    // to the submitting user's for these checks.)
    if (!std::filesystem::is_directory(p, ec) ||
        ::faccessat(AT_FDCWD, p.c_str(), W_OK | X_OK, AT_EACCESS) != 0) {
      errors->Add(ckpt.PosOf("dir"), ckpt.KeyPath("dir"),
                  Cat("cannot be created: \"", p.string(), "\" is not a writable directory"));
    }
  }
}

}  // namespace

absl::StatusOr<SbatchOption> ParseSbatchOption(std::string_view o) {
  if (o.size() < 2 || o[0] != '-') {
    return absl::InvalidArgumentError(
        Cat("\"", o, "\" is not an sbatch option; allowed: \"--name=value\""));
  }
  // "--name=value", "--name value", "-Xvalue", "-X value": compare the option's name.
  const std::string_view flag =
      o.starts_with("--") ? o.substr(0, o.find_first_of("= \t")) : o.substr(0, 2);
  for (const char* m : kManagedSbatch) {
    if (flag == m) {
      return absl::InvalidArgumentError(
          Cat("\"", o, "\" is set by belay itself (", flag,
              "); use the matching [resources] key or leave it to belay"));
    }
  }
  const size_t eq = o.find('=');
  const std::string_view name = o.substr(0, eq);
  const std::string_view value = eq == std::string_view::npos ? "" : o.substr(eq + 1);
  if (!value.empty()) {
    if (name == "--qos") return SbatchOption{SbatchOption::Kind::kQos, std::string(value)};
    if (name == "--reservation")
      return SbatchOption{SbatchOption::Kind::kReservation, std::string(value)};
    if (name == "--constraint")
      return SbatchOption{SbatchOption::Kind::kConstraint, std::string(value)};
  } else if (o == "--exclusive") {
    return SbatchOption{SbatchOption::Kind::kExclusive, ""};
  }
  return absl::InvalidArgumentError(
      Cat("\"", o,
          "\" is not supported by belay's Slurm backend; allowed: "
          "\"--qos=<name>\", \"--reservation=<name>\", \"--constraint=<features>\", "
          "\"--exclusive\""));
}

std::string SpecError::ToString() const {
  if (key.empty()) return Cat(file, ":", line, ":", column, ": ", message);
  return Cat(file, ":", line, ":", column, ": ", key, ": ", message);
}

#define BELAY_ENUM_NAMES(Type, ...)                             \
  std::string_view ToString(Type v) {                           \
    static constexpr std::string_view kNames[] = {__VA_ARGS__}; \
    return kNames[static_cast<size_t>(v)];                      \
  }
BELAY_ENUM_NAMES(ModelArch, "gpt2", "apertus")
BELAY_ENUM_NAMES(MlpActivation, "xielu", "swiglu", "gelu")
BELAY_ENUM_NAMES(OptimizerKind, "adamw", "ademamix")
BELAY_ENUM_NAMES(DataFormat, "llmc", "megatron")
BELAY_ENUM_NAMES(LrSchedule, "cosine", "wsd")
BELAY_ENUM_NAMES(CooldownShape, "linear", "1-sqrt")
BELAY_ENUM_NAMES(DType, "fp32", "bf16")
BELAY_ENUM_NAMES(SchedulerKind, "local", "slurm")
BELAY_ENUM_NAMES(NanPolicy, "rollback", "stop")
#undef BELAY_ENUM_NAMES

int64_t CampaignSpec::total_steps() const {
  if (train.total_steps) return *train.total_steps;
  int64_t per_step = train.global_batch * model.seq_len;
  if (!train.total_tokens || per_step <= 0) return 0;
  return (*train.total_tokens + per_step - 1) / per_step;
}

int64_t CampaignSpec::grad_accum_steps(int64_t world_size) const {
  int64_t per_micro = train.micro_batch * world_size;
  if (per_micro <= 0 || train.global_batch % per_micro != 0) return 0;
  return train.global_batch / per_micro;
}

SpecParseResult ParseCampaignSpec(std::string_view text, std::string_view file,
                                  const SpecParseOptions& options) {
  SpecErrorSink errors{std::string(file)};
  SpecParseResult result;
  if (text.size() > kMaxSpecBytes) {
    errors.AddAt(1, 1, "",
                 Cat("file is ", text.size(), " bytes; a campaign file may be at most ",
                     kMaxSpecBytes, " bytes"));
    result.errors = errors.Take();
    return result;
  }
  // Refused before the parser sees it: a shape the parser would recurse too deep on.
  if (std::optional<SpecError> e = CheckTomlBounds(text, file)) {
    result.errors.push_back(std::move(*e));
    return result;
  }
  toml::table root;
  try {
    root = toml::parse(text, file);
  } catch (const toml::parse_error& e) {
    const toml::source_position& pos = e.source().begin;
    errors.AddAt(pos.line == 0 ? 1 : pos.line, pos.column == 0 ? 1 : pos.column, "",
                 Cat("syntax error: ", e.description()));
    result.errors = errors.Take();
    return result;
  }
  if (root.empty()) {
    errors.AddAt(1, 1, "",
                 "the file is empty; a campaign needs at least the sections [campaign], "
                 "[model], [data], [train] and [checkpoint]");
    result.errors = errors.Take();
    return result;
  }

  CampaignSpec spec;
  TomlReader top(&root, "", kTop, &errors);
  ReadCampaign(top.Table("campaign", true), &spec.campaign);
  TomlReader model = top.Table("model", true);
  std::optional<ModelArch> arch = ReadModel(model, &spec.model);
  TomlReader data = top.Table("data", true);
  ReadData(data, arch, spec.model.vocab_size, &spec.data);
  TomlReader train = top.Table("train", true);
  ReadTrain(train, &spec.train);
  TomlReader optimizer = top.Table("optimizer", false);
  ReadOptimizer(optimizer, &spec.optimizer);
  TomlReader ckpt = top.Table("checkpoint", true);
  ReadCheckpoint(ckpt, &spec.checkpoint);
  TomlReader resources = top.Table("resources", false);
  ReadResources(resources, &spec.resources);
  ReadRestart(top.Table("restart", false), &spec.restart);
  top.ReportUnknownKeys();

  CheckCrossSection(spec, train, data, resources, &errors);
  CheckGpuSupport(spec, model, optimizer, &errors);

  std::error_code ec;
  std::filesystem::path base =
      options.base_dir.empty() ? std::filesystem::current_path(ec) : options.base_dir;
  if (base.is_relative()) base = std::filesystem::absolute(base, ec);
  for (std::string& g : spec.data.train) g = Resolve(base, g);
  for (std::string& g : spec.data.val) g = Resolve(base, g);
  if (!spec.checkpoint.dir.empty()) spec.checkpoint.dir = Resolve(base, spec.checkpoint.dir);
  if (options.check_paths) CheckPaths(spec, data, ckpt, &errors);

  result.errors = errors.Take();
  if (result.errors.empty()) result.spec = std::move(spec);
  return result;
}

SpecParseResult LoadCampaignSpec(const std::filesystem::path& path, SpecParseOptions options) {
  SpecParseResult result;
  std::string file = path.string();
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    result.errors.push_back({file, 1, 1, "", "is a directory, not a campaign file"});
    return result;
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    result.errors.push_back(
        {file, 1, 1, "", Cat("cannot open: ", std::make_error_code(std::errc(errno)).message())});
    return result;
  }
  // Read one byte past the limit so an oversized file is reported by its real size.
  auto size = std::filesystem::file_size(path, ec);
  std::string text;
  if (!ec && size > kMaxSpecBytes) {
    result.errors.push_back({file, 1, 1, "",
                             Cat("file is ", size, " bytes; a campaign file may be at most ",
                                 kMaxSpecBytes, " bytes")});
    return result;
  }
  std::ostringstream buf;
  buf << in.rdbuf();
  text = buf.str();
  if (options.base_dir.empty()) {
    options.base_dir = std::filesystem::absolute(path, ec).parent_path();
  }
  return ParseCampaignSpec(text, file, options);
}

}  // namespace belay
