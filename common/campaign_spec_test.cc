// Campaign file parsing: malformed inputs each give their own message at their own line;
// valid files (the shipped examples among them) round-trip through FormatCampaignSpec.
#include "common/campaign_spec.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <tuple>
#include <vector>

namespace belay {
namespace {

// A small valid campaign; the line numbers of its keys are what the cases below expect.
constexpr std::string_view kBase = R"([campaign]
name = "t1"

[model]
n_layer = 2
n_head = 2
d_model = 8
seq_len = 16
vocab_size = 64

[data]
train = "data/train_*.bin"
val = "data/val_*.bin"

[train]
total_steps = 10
micro_batch = 2
global_batch = 4
lr = 1e-3

[checkpoint]
dir = "ckpt"

[resources]
ranks_per_node = 2
)";

// `s` with the first occurrence of `from` replaced by `to`.
std::string Edit(std::string s, std::string_view from, std::string_view to) {
  size_t at = s.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  if (at != std::string::npos) s.replace(at, from.size(), to);
  return s;
}

std::string With(std::string_view from, std::string_view to) {
  return Edit(std::string(kBase), from, to);
}

std::string Append(std::string_view extra) { return std::string(kBase) + std::string(extra); }

// kBase as an Apertus model: `arch` at line 5, `d_ff = 32` at line 6, then `keys` (whole
// lines) from line 7; every later line of kBase moves down by two plus those lines.
std::string Apertus(std::string_view keys = "") {
  return With("n_layer = 2", "arch = \"apertus\"\nd_ff = 32\n" + std::string(keys) + "n_layer = 2");
}

SpecParseResult Parse(std::string_view text) {
  SpecParseOptions opts;
  opts.check_paths = false;
  opts.base_dir = "/base";
  return ParseCampaignSpec(text, "c.toml", opts);
}

struct BadCase {
  std::string name;
  std::string text;
  // One of the errors, exactly as `belay validate` prints it.
  std::string error;
  size_t error_count = 1;
};

std::ostream& operator<<(std::ostream& os, const BadCase& c) { return os << c.name; }

class MalformedSpec : public ::testing::TestWithParam<BadCase> {};

TEST_P(MalformedSpec, ReportsItsErrorAtItsLine) {
  const BadCase& c = GetParam();
  SpecParseResult r = Parse(c.text);
  ASSERT_FALSE(r.ok());
  EXPECT_FALSE(r.spec.has_value());
  std::string all;
  for (const SpecError& e : r.errors) all += e.ToString() + "\n";
  EXPECT_NE(all.find(c.error + "\n"), std::string::npos) << "want: " << c.error << "\ngot:\n"
                                                         << all;
  EXPECT_EQ(r.errors.size(), c.error_count) << all;
}

// Syntax errors carry toml++'s description; only the position and prefix are pinned here.
struct SyntaxCase {
  std::string name;
  std::string text;
  uint32_t line;
};

std::ostream& operator<<(std::ostream& os, const SyntaxCase& c) { return os << c.name; }

class SyntaxError : public ::testing::TestWithParam<SyntaxCase> {};

TEST_P(SyntaxError, NamesLineAndSaysSyntaxError) {
  const SyntaxCase& c = GetParam();
  SpecParseResult r = Parse(c.text);
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors[0].line, c.line) << r.errors[0].ToString();
  EXPECT_EQ(r.errors[0].key, "");
  EXPECT_EQ(r.errors[0].message.rfind("syntax error: ", 0), 0u) << r.errors[0].message;
  EXPECT_EQ(r.errors[0].ToString().rfind("c.toml:" + std::to_string(c.line) + ":", 0), 0u);
}

INSTANTIATE_TEST_SUITE_P(
    Toml, SyntaxError,
    ::testing::Values(
        SyntaxCase{"UnterminatedString", With("name = \"t1\"", "name = \"t1"), 2},
        SyntaxCase{"MissingValue", With("n_layer = 2", "n_layer = "), 5},
        SyntaxCase{"DuplicateKey", With("n_head = 2", "n_head = 2\nn_head = 4"), 7},
        SyntaxCase{"DuplicateTable", Append("\n[model]\nn_layer = 3\n"), 27},
        SyntaxCase{"InvalidUtf8InString", With("name = \"t1\"", "name = \"t\xff\xfe\""), 2},
        SyntaxCase{"InvalidUtf8InComment", With("[data]", "[data] # caf\xc3\x28"), 11},
        SyntaxCase{"IntegerOverflow",
                   With("total_steps = 10", "total_steps = 99999999999999999999"), 16},
        SyntaxCase{"BareWord", With("lr = 1e-3", "lr = fast"), 19},
        SyntaxCase{"NulByte",
                   With("seq_len = 16", std::string("seq_len = 1\0"
                                                    "6",
                                                    12)),
                   8}),
    [](const auto& p) { return p.param.name; });

INSTANTIATE_TEST_SUITE_P(
    Fields, MalformedSpec,
    ::testing::Values(
        // Empty and oversized files.
        BadCase{"EmptyFile", "",
                "c.toml:1:1: the file is empty; a campaign needs at least the sections "
                "[campaign], [model], [data], [train] and [checkpoint]"},
        BadCase{"OnlyComments", "# nothing here\n\n   \n",
                "c.toml:1:1: the file is empty; a campaign needs at least the sections "
                "[campaign], [model], [data], [train] and [checkpoint]"},
        BadCase{"TenMegabytes", "# " + std::string((10 << 20) - 3, 'x') + "\n",
                "c.toml:1:1: file is 10485760 bytes; a campaign file may be at most 1048576 "
                "bytes"},
        // Wrong types.
        BadCase{"NameIsInteger", With("name = \"t1\"", "name = 5"),
                "c.toml:2:8: campaign.name: expected a string, got integer 5"},
        BadCase{"IntegerAsString", With("micro_batch = 2", "micro_batch = \"2\""),
                "c.toml:17:15: train.micro_batch: expected an integer, got string \"2\""},
        BadCase{"IntegerAsFloat", With("micro_batch = 2", "micro_batch = 2.0"),
                "c.toml:17:15: train.micro_batch: expected an integer, got float 2"},
        BadCase{"FloatAsString", With("lr = 1e-3", "lr = \"fast\""),
                "c.toml:19:6: train.lr: expected a number, got string \"fast\""},
        BadCase{"BoolAsString", With("val = \"data/val_*.bin\"", "shuffle = \"yes\""),
                "c.toml:13:11: data.shuffle: expected a boolean (true or false), got string "
                "\"yes\""},
        BadCase{"SectionIsValue", With("[campaign]\nname = \"t1\"\n", "campaign = 5\n"),
                "c.toml:1:12: campaign: expected a table, got integer 5"},
        BadCase{"GlobIsInteger", With("train = \"data/train_*.bin\"", "train = 7"),
                "c.toml:12:9: data.train: expected a string or an array of strings, got "
                "integer 7"},
        BadCase{"GlobArrayWithNumber", With("train = \"data/train_*.bin\"", "train = [\"a\", 3]"),
                "c.toml:12:15: data.train: expected a string or an array of strings, got "
                "integer 3"},
        BadCase{"EmptyGlobArray", With("train = \"data/train_*.bin\"", "train = []"),
                "c.toml:12:9: data.train: empty array; expected at least one path"},
        BadCase{"DurationAsInteger", Append("time_limit = 3600\nscheduler = \"slurm\"\n"),
                "c.toml:26:14: resources.time_limit: expected a duration string such as "
                "\"30m\", got integer 3600"},
        BadCase{"DateWhereIntegerExpected", With("total_steps = 10", "total_steps = 2024-01-01"),
                "c.toml:16:15: train.total_steps: expected an integer, got a date"},
        BadCase{"TableWhereStringExpected", With("dir = \"ckpt\"", "dir = { path = \"ckpt\" }"),
                "c.toml:22:7: checkpoint.dir: expected a string, got a table"},
        // Out of range.
        BadCase{"ZeroLayers", With("n_layer = 2", "n_layer = 0"),
                "c.toml:5:11: model.n_layer: 0 is out of range; allowed: 1..1024"},
        BadCase{"TooManyHeads", With("n_head = 2", "n_head = 5000"),
                "c.toml:6:10: model.n_head: 5000 is out of range; allowed: 1..1024"},
        BadCase{"ZeroLearningRate", With("lr = 1e-3", "lr = 0.0"),
                "c.toml:19:6: train.lr: 0 is out of range; allowed: > 0 and <= 10"},
        BadCase{"NanLearningRate", With("lr = 1e-3", "lr = nan"),
                "c.toml:19:6: train.lr: nan is out of range; allowed: > 0 and <= 10"},
        BadCase{"Beta2AboveOne", With("lr = 1e-3", "lr = 1e-3\nbeta2 = 1.5"),
                "c.toml:20:9: train.beta2: 1.5 is out of range; allowed: >= 0 and <= 1"},
        BadCase{"NegativeMicroBatch", With("micro_batch = 2", "micro_batch = -2"),
                "c.toml:17:15: train.micro_batch: -2 is out of range; allowed: 1..65536"},
        BadCase{"ZeroStageThree", With("lr = 1e-3", "lr = 1e-3\nzero_stage = 3"),
                "c.toml:20:14: train.zero_stage: 3 is not supported yet; allowed: 0, 1, 2"},
        BadCase{"ZeroStageSeven", With("lr = 1e-3", "lr = 1e-3\nzero_stage = 7"),
                "c.toml:20:14: train.zero_stage: 7 is out of range; allowed: 0..3"},
        BadCase{"NameWithSpace", With("name = \"t1\"", "name = \"my campaign\""),
                "c.toml:2:8: campaign.name: \"my campaign\" is not a valid name; allowed: "
                "letters, digits, '.', '_' and '-', starting with a letter or digit, at most 64 "
                "bytes"},
        BadCase{"UnknownArch", With("n_layer = 2", "arch = \"llama\"\nd_ff = 32\nn_layer = 2"),
                "c.toml:5:8: model.arch: \"llama\" is not allowed; allowed: \"gpt2\", "
                "\"apertus\""},
        BadCase{"ApertusWithoutMlpSize", With("n_layer = 2", "arch = \"apertus\"\nn_layer = 2"),
                "c.toml:4:1: model.d_ff: missing required key"},
        BadCase{"MlpSizeZero", Edit(Apertus(), "d_ff = 32", "d_ff = 0"),
                "c.toml:6:8: model.d_ff: 0 is out of range; allowed: 1..1048576"},
        BadCase{"KvHeadsNotDividingHeads", Apertus("n_kv_head = 3\n"),
                "c.toml:7:13: model.n_kv_head: 3 does not divide model.n_head = 2; allowed: a "
                "divisor of n_head"},
        BadCase{"ApertusOddHeadSize", Edit(Apertus(), "d_model = 8", "d_model = 6"),
                "c.toml:9:11: model.d_model: 6 / model.n_head = 2 is a head size of 3; arch = "
                "\"apertus\" needs an even head size (RoPE rotates pairs)"},
        BadCase{"RopeThetaZero", Apertus("rope_theta = 0\n"),
                "c.toml:7:14: model.rope_theta: 0 is out of range; allowed: > 0 and <= 1e+12"},
        BadCase{"RopeScalingFactorBelowOne", Apertus("rope_scaling = { factor = 0.5 }\n"),
                "c.toml:7:27: model.rope_scaling.factor: 0.5 is out of range; allowed: >= 1 and "
                "<= 1024"},
        BadCase{"RopeScalingHighFactorNotAboveLow",
                Apertus() + "\n[model.rope_scaling]\nlow_freq_factor = 4\nhigh_freq_factor = 4\n",
                "c.toml:31:20: model.rope_scaling.high_freq_factor: 4 is not above "
                "model.rope_scaling.low_freq_factor = 4; allowed: > low_freq_factor"},
        BadCase{"RopeScalingHighFactorNotAboveDefaultLow",
                Apertus("rope_scaling = { high_freq_factor = 0.5 }\n"),
                "c.toml:7:37: model.rope_scaling.high_freq_factor: 0.5 is not above "
                "model.rope_scaling.low_freq_factor = 1; allowed: > low_freq_factor"},
        BadCase{"RopeScalingZeroLowFactor", Apertus("rope_scaling = { low_freq_factor = 0 }\n"),
                "c.toml:7:36: model.rope_scaling.low_freq_factor: 0 is out of range; allowed: > 0 "
                "and <= 1024"},
        BadCase{"RopeScalingZeroOriginalContext",
                Apertus("rope_scaling = { original_context = 0 }\n"),
                "c.toml:7:37: model.rope_scaling.original_context: 0 is out of range; allowed: "
                "1..1048576"},
        BadCase{"UnknownRopeScalingKey", Apertus("rope_scaling = { factor = 8, theta = 1 }\n"),
                "c.toml:7:30: model.rope_scaling.theta: unknown key; allowed keys: factor, "
                "high_freq_factor, low_freq_factor, original_context"},
        BadCase{"UnknownActivation", Apertus("activation = \"relu\"\n"),
                "c.toml:7:14: model.activation: \"relu\" is not allowed; allowed: \"xielu\", "
                "\"swiglu\", \"gelu\""},
        BadCase{"NormEpsOne", Apertus("norm_eps = 1\n"),
                "c.toml:7:12: model.norm_eps: 1 is out of range; allowed: > 0 and < 1"},
        BadCase{"QkNormAsString", Apertus("qk_norm = \"yes\"\n"),
                "c.toml:7:11: model.qk_norm: expected a boolean (true or false), got string "
                "\"yes\""},
        BadCase{"ApertusKeyWithExplicitGpt2",
                With("n_layer = 2", "arch = \"gpt2\"\nn_kv_head = 1\nn_layer = 2"),
                "c.toml:6:13: model.n_kv_head: only for arch = \"apertus\" (it is \"gpt2\")"},
        BadCase{"DocumentMaskingWithoutEodToken",
                Edit(Apertus(), "val = \"data/val_*.bin\"",
                     "val = \"data/val_*.bin\"\ndocument_masking = true"),
                "c.toml:16:20: data.eod_token: missing: document_masking = true needs "
                "data.eod_token"},
        BadCase{"EodTokenOutsideVocabulary",
                Edit(Apertus(), "val = \"data/val_*.bin\"",
                     "val = \"data/val_*.bin\"\ndocument_masking = true\neod_token = 64"),
                "c.toml:17:13: data.eod_token: 64 is not a token of the vocabulary "
                "(model.vocab_size = 64); allowed: 0..63"},
        BadCase{"NegativeEodToken",
                Edit(Apertus(), "val = \"data/val_*.bin\"",
                     "val = \"data/val_*.bin\"\ndocument_masking = true\neod_token = -1"),
                "c.toml:17:13: data.eod_token: -1 is out of range; allowed: 0..16777215"},
        BadCase{
            "EodTokenWithoutDocumentMasking",
            Edit(Apertus(), "val = \"data/val_*.bin\"", "val = \"data/val_*.bin\"\neod_token = 0"),
            "c.toml:16:13: data.eod_token: only applies to document_masking = true (it is "
            "false)"},
        BadCase{"EodTokenWithDocumentMaskingOff",
                Edit(Apertus(), "val = \"data/val_*.bin\"",
                     "val = \"data/val_*.bin\"\ndocument_masking = false\neod_token = 0"),
                "c.toml:17:13: data.eod_token: only applies to document_masking = true (it is "
                "false)"},
        BadCase{"DocumentMaskingWithGpt2",
                With("val = \"data/val_*.bin\"",
                     "val = \"data/val_*.bin\"\ndocument_masking = true\neod_token = 0"),
                "c.toml:14:20: data.document_masking: true needs model.arch = \"apertus\" (it is "
                "\"gpt2\"; the GPT-2 model has no document mask)"},
        BadCase{"UnknownOptimizer", Append("\n[optimizer]\nname = \"adam\"\n"),
                "c.toml:28:8: optimizer.name: \"adam\" is not allowed; allowed: \"adamw\", "
                "\"ademamix\""},
        BadCase{"AdemamixKeyWithDefaultAdamW", Append("\n[optimizer]\nbeta3 = 0.999\n"),
                "c.toml:28:9: optimizer.beta3: only applies to optimizer.name = \"ademamix\" (it "
                "is \"adamw\")"},
        BadCase{"AdemamixKeyWithAdamW",
                Append("\n[optimizer]\nname = \"adamw\"\nalpha_warmup_steps = 5\n"),
                "c.toml:29:22: optimizer.alpha_warmup_steps: only applies to optimizer.name = "
                "\"ademamix\" (it is \"adamw\")"},
        BadCase{"Beta3One", Append("\n[optimizer]\nname = \"ademamix\"\nbeta3 = 1.0\n"),
                "c.toml:29:9: optimizer.beta3: 1 is out of range; allowed: > 0 and < 1"},
        BadCase{"NegativeAlpha", Append("\n[optimizer]\nname = \"ademamix\"\nalpha = -1\n"),
                "c.toml:29:9: optimizer.alpha: -1 is out of range; allowed: >= 0 and <= 1000"},
        BadCase{"NegativeBeta3Warmup",
                Append("\n[optimizer]\nname = \"ademamix\"\nbeta3_warmup_steps = -1\n"),
                "c.toml:29:22: optimizer.beta3_warmup_steps: -1 is out of range; allowed: "
                "0..1125899906842624"},
        BadCase{"TrainKeyInOptimizer", Append("\n[optimizer]\nlr = 1e-3\n"),
                "c.toml:28:1: optimizer.lr: unknown key; allowed keys: alpha, "
                "alpha_warmup_steps, beta3, beta3_warmup_steps, name"},
        BadCase{"UnknownSchedule", With("lr = 1e-3", "lr = 1e-3\nlr_schedule = \"linear\""),
                "c.toml:20:15: train.lr_schedule: \"linear\" is not allowed; allowed: "
                "\"cosine\", \"wsd\""},
        BadCase{"DurationNotParsable", Append("\n[restart]\nhang_timeout = \"5 minutes\"\n"),
                "c.toml:28:16: restart.hang_timeout: \"5 minutes\": expected a duration such as "
                "\"90s\", \"30m\", \"1h30m\", \"2d\" or \"[D-]HH:MM:SS\""},
        BadCase{"DurationTooShort", Append("\n[restart]\nhang_timeout = \"5s\"\n"),
                "c.toml:28:16: restart.hang_timeout: \"5s\" is out of range; allowed: 10s..7d"},
        // Unknown keys.
        BadCase{"MisspelledKey", With("val = \"data/val_*.bin\"", "shufle = false"),
                "c.toml:13:1: data.shufle: unknown key; did you mean 'shuffle'?"},
        BadCase{"MisspelledRequiredKey", With("d_model = 8", "dmodel = 8"),
                "c.toml:7:1: model.dmodel: unknown key; did you mean 'd_model'?", 2},
        BadCase{"UnknownSection", Append("\n[logging]\nlevel = \"debug\"\n"),
                "c.toml:27:2: logging: unknown key; allowed keys: campaign, checkpoint, data, "
                "model, optimizer, resources, restart, train"},
        BadCase{"UnknownGoldfishKey",
                With("lr = 1e-3", "lr = 1e-3\ngoldfish = { k = 50, h = 5, seed = 3 }"),
                "c.toml:20:29: train.goldfish.seed: unknown key; allowed keys: h, k"},
        // Missing required keys.
        BadCase{"MissingModelSection",
                With("[model]\nn_layer = 2\nn_head = 2\nd_model = 8\nseq_len = 16\nvocab_size = "
                     "64\n",
                     ""),
                "c.toml:1:1: model: missing required section [model]"},
        BadCase{"MissingLayerCount", With("n_layer = 2\n", ""),
                "c.toml:4:1: model.n_layer: missing required key"},
        BadCase{"MissingStepsAndTokens", With("total_steps = 10\n", ""),
                "c.toml:15:1: train.total_steps: missing: set train.total_steps or "
                "train.total_tokens"},
        BadCase{"MissingCheckpointDir", With("dir = \"ckpt\"\n", ""),
                "c.toml:21:1: checkpoint.dir: missing required key"},
        BadCase{"MissingGoldfishH", With("lr = 1e-3", "lr = 1e-3\ngoldfish = { k = 50 }"),
                "c.toml:20:12: train.goldfish.h: missing required key"},
        // Contradictory fields.
        BadCase{"StepsAndTokens", With("total_steps = 10", "total_steps = 10\ntotal_tokens = 640"),
                "c.toml:17:16: train.total_tokens: set together with train.total_steps; "
                "allowed: exactly one of the two"},
        BadCase{"DModelNotDivisibleByHeads", With("n_head = 2", "n_head = 3"),
                "c.toml:7:11: model.d_model: 8 is not divisible by model.n_head = 3; allowed: a "
                "multiple of n_head"},
        BadCase{"GlobalBatchNotMultipleOfMicro", With("global_batch = 4", "global_batch = 5"),
                "c.toml:18:16: train.global_batch: 5 is not divisible by train.micro_batch = 2; "
                "allowed: a multiple of micro_batch"},
        BadCase{"GlobalBatchNotMultipleOfRanks", With("global_batch = 4", "global_batch = 6"),
                "c.toml:18:16: train.global_batch: 6 is not divisible by train.micro_batch × "
                "ranks = 2 × 2 = 4; allowed: a multiple of 4"},
        BadCase{"MinLrAboveLr", With("lr = 1e-3", "lr = 1e-3\nmin_lr = 0.01"),
                "c.toml:20:10: train.min_lr: 0.01 is above train.lr = 0.001; allowed: 0..lr"},
        BadCase{"WsdWithoutCooldown", With("lr = 1e-3", "lr = 1e-3\nlr_schedule = \"wsd\""),
                "c.toml:20:15: train.cooldown_steps: missing: lr_schedule = \"wsd\" needs "
                "train.cooldown_steps"},
        BadCase{"CooldownWithCosine", With("lr = 1e-3", "lr = 1e-3\ncooldown_steps = 5"),
                "c.toml:20:18: train.cooldown_steps: only applies to lr_schedule = \"wsd\" (the "
                "schedule is \"cosine\")"},
        BadCase{"WarmupLongerThanTraining", With("lr = 1e-3", "lr = 1e-3\nwarmup_steps = 11"),
                "c.toml:20:16: train.warmup_steps: warmup = 11 steps is more than the 10 steps "
                "of training"},
        BadCase{"GoldfishWindowLongerThanSequence",
                With("lr = 1e-3", "lr = 1e-3\ngoldfish = { k = 50, h = 17 }"),
                "c.toml:20:12: train.goldfish.h: 17 is longer than model.seq_len = 16; allowed: "
                "1..16"},
        BadCase{
            "EvalWithoutValidationData",
            Edit(With("val = \"data/val_*.bin\"\n", ""), "lr = 1e-3", "lr = 1e-3\neval_every = 5"),
            "c.toml:19:14: train.eval_every: evaluation needs validation shards; set data.val "
            "or eval_every = 0"},
        BadCase{"Bf16OnCpu", With("lr = 1e-3", "lr = 1e-3\ndtype = \"bf16\""),
                "c.toml:20:9: train.dtype: \"bf16\" needs GPUs (resources.gpus_per_node = 0); "
                "allowed on CPU: \"fp32\""},
        BadCase{"ApertusOnGpus", Apertus() + "gpus_per_node = 2\n",
                "c.toml:5:8: model.arch: \"apertus\" is not supported on GPUs yet "
                "(resources.gpus_per_node > 0); allowed with GPUs: \"gpt2\""},
        BadCase{"AdemamixOnGpus", Append("gpus_per_node = 2\n\n[optimizer]\nname = \"ademamix\"\n"),
                "c.toml:29:8: optimizer.name: \"ademamix\" is not supported on GPUs yet "
                "(resources.gpus_per_node > 0; the GPU update is AdamW); allowed with GPUs: "
                "\"adamw\""},
        BadCase{"PartitionWithLocalScheduler", Append("partition = \"normal\"\n"),
                "c.toml:26:13: resources.partition: only applies to resources.scheduler = "
                "\"slurm\" (it is \"local\")"},
        BadCase{"SeveralNodesLocally", Append("nodes = 2\n"),
                "c.toml:26:9: resources.nodes: 2 nodes with the local scheduler; allowed: 1", 2},
        BadCase{
            "MinNodesAboveNodes", Append("scheduler = \"slurm\"\nmin_nodes = 2\n"),
            "c.toml:27:13: resources.min_nodes: 2 is more than resources.nodes = 1; allowed: 1..1"},
        BadCase{
            "MinNodesWithLocalScheduler", Append("min_nodes = 1\n"),
            "c.toml:26:13: resources.min_nodes: only applies to resources.scheduler = \"slurm\" "
            "(it is \"local\")"},
        BadCase{"MinNodesNotAValidWorldSize",
                Edit(Append("scheduler = \"slurm\"\nnodes = 3\nmin_nodes = 2\n"),
                     "global_batch = 4", "global_batch = 12"),
                "c.toml:28:13: resources.min_nodes: 2 nodes are 4 ranks, and train.global_batch = "
                "12 is "
                "not divisible by train.micro_batch × 4 = 8"},
        BadCase{"RanksNotOnePerGpu", Append("gpus_per_node = 4\nscheduler = \"slurm\"\n"),
                "c.toml:25:18: resources.ranks_per_node: 2 ranks with resources.gpus_per_node = "
                "4; allowed: one rank per GPU"},
        BadCase{"SbatchOptionBelayManages",
                Append("scheduler = \"slurm\"\nsbatch_options = [\"--exclude=nid001\"]\n"),
                "c.toml:27:18: resources.sbatch_options: \"--exclude=nid001\" is set by belay "
                "itself (--exclude); use the matching [resources] key or leave it to belay"},
        BadCase{"SbatchShortOptionBelayManages",
                Append("scheduler = \"slurm\"\nsbatch_options = [\"-t10\"]\n"),
                "c.toml:27:18: resources.sbatch_options: \"-t10\" is set by belay itself (-t); "
                "use the matching [resources] key or leave it to belay"},
        BadCase{"SbatchSpacedOptionBelayManages",
                Append("scheduler = \"slurm\"\nsbatch_options = [\"--time 1:00:00\"]\n"),
                "c.toml:27:18: resources.sbatch_options: \"--time 1:00:00\" is set by belay "
                "itself (--time); use the matching [resources] key or leave it to belay"},
        BadCase{"SbatchOptionTheBackendCannotSet",
                Append("scheduler = \"slurm\"\nsbatch_options = [\"--qos=high\", \"--mem=4G\"]\n"),
                "c.toml:27:18: resources.sbatch_options: \"--mem=4G\" is not supported by belay's "
                "Slurm "
                "backend; allowed: \"--qos=<name>\", \"--reservation=<name>\", "
                "\"--constraint=<features>\", "
                "\"--exclusive\""},
        BadCase{"SpareNodesNotSupportedYet", Append("scheduler = \"slurm\"\nspare_nodes = 2\n"),
                "c.toml:27:15: resources.spare_nodes: 2 spare nodes: not supported yet; belay "
                "holds no spare "
                "nodes (resources.min_nodes lets a campaign go on with fewer nodes); allowed: 0"},
        BadCase{"PreLimitSignalWithLocalScheduler", Append("pre_limit_signal = \"5m\"\n"),
                "c.toml:26:20: resources.pre_limit_signal: only applies to resources.scheduler = "
                "\"slurm\" "
                "(it is \"local\"; local jobs have no time limit to signal before)"},
        BadCase{
            "PreLimitSignalLongerThanSlurmCarries",
            Append("scheduler = \"slurm\"\npre_limit_signal = \"1d\"\n"),
            "c.toml:27:20: resources.pre_limit_signal: \"1d\" is out of range; allowed: 0s..18h"},
        BadCase{"TimeLimitNotWholeMinutes", Append("scheduler = \"slurm\"\ntime_limit = \"90s\"\n"),
                "c.toml:27:14: resources.time_limit: 1m30s is not a whole number of minutes; "
                "Slurm's time "
                "limits are minutes"},
        BadCase{"Fp32OnGpus",
                Edit(Append("gpus_per_node = 2\nscheduler = \"slurm\"\n"), "lr = 1e-3",
                     "lr = 1e-3\ndtype = \"fp32\""),
                "c.toml:20:9: train.dtype: \"fp32\" training on GPUs is not supported; allowed "
                "with GPUs: "
                "\"bf16\""},
        BadCase{"NestedTooDeep",
                Append("sbatch_options = " + std::string(20, '[') + std::string(20, ']') + "\n"),
                "c.toml:26:33: nested 17 levels deep (each table-header part, dotted-key part, "
                "array and "
                "inline table is a level); a campaign file may nest at most 16"},
        BadCase{"DottedKeyTooLong", Append("a.b.c.d.e.f.g.h.i = 1\n"),
                "c.toml:26:1: key of 9 dotted parts; a campaign file allows at most 8"},
        BadCase{"BackoffInitialAboveMax",
                Append("\n[restart]\nbackoff = { initial = \"10m\", max = \"1m\" }\n"),
                "c.toml:28:36: restart.backoff.max: 1m is shorter than restart.backoff.initial = "
                "10m"},
        BadCase{"KeepEveryNotMultipleOfEvery",
                With("dir = \"ckpt\"", "dir = \"ckpt\"\nevery_steps = 4\nkeep_every = 10"),
                "c.toml:24:14: checkpoint.keep_every: 10 is not a multiple of "
                "checkpoint.every_steps = 4, so no checkpoint would be kept by it"},
        BadCase{"SignalNotBeforeLimit",
                Append("scheduler = \"slurm\"\ntime_limit = \"10m\"\npre_limit_signal = \"10m\"\n"),
                "c.toml:28:20: resources.pre_limit_signal: 10m is not shorter than "
                "resources.time_limit = 10m"}),
    [](const auto& p) { return p.param.name; });

TEST(CampaignSpec, ValidFileGetsDefaultsAndPathsRelativeToItsDirectory) {
  SpecParseResult r = Parse(kBase);
  ASSERT_TRUE(r.ok()) << r.errors.front().ToString();
  const CampaignSpec& s = *r.spec;
  EXPECT_EQ(s.campaign.name, "t1");
  EXPECT_EQ(s.model.arch, ModelArch::kGpt2);
  EXPECT_EQ(s.data.train, std::vector<std::string>{"/base/data/train_*.bin"});
  EXPECT_EQ(s.checkpoint.dir, "/base/ckpt");
  EXPECT_EQ(s.checkpoint.every_steps, 1000);
  EXPECT_EQ(s.train.lr_schedule, LrSchedule::kCosine);
  EXPECT_DOUBLE_EQ(s.train.lr, 1e-3);
  EXPECT_EQ(s.train.zero_stage, 0);
  EXPECT_FALSE(s.train.goldfish.has_value());
  EXPECT_EQ(s.resources.scheduler, SchedulerKind::kLocal);
  EXPECT_EQ(s.resources.world_size(), 2);
  EXPECT_EQ(s.restart.backoff.initial, std::chrono::seconds(30));
  EXPECT_FALSE(s.restart.hang_timeout.has_value());  // auto
  EXPECT_EQ(s.total_steps(), 10);
  EXPECT_EQ(s.grad_accum_steps(2), 1);
  EXPECT_EQ(s.grad_accum_steps(1), 2);
  EXPECT_EQ(s.grad_accum_steps(3), 0);  // 4 sequences do not split over 3 ranks
}

TEST(CampaignSpec, DtypeDefaultsToBf16OnGpusAndRoundTrips) {
  SpecParseResult r = Parse(Edit(Append("gpus_per_node = 2\nscheduler = \"slurm\"\n"),
                                 "micro_batch = 2", "micro_batch = 1"));
  ASSERT_TRUE(r.ok()) << r.errors.front().ToString();
  EXPECT_EQ(r.spec->train.dtype, DType::kBf16);
  SpecParseResult again = Parse(FormatCampaignSpec(*r.spec));
  ASSERT_TRUE(again.ok()) << again.errors.front().ToString();
  EXPECT_TRUE(*again.spec == *r.spec);
}

TEST(CampaignSpec, EveryZeroStageIsAcceptedOnGpus) {
  for (int stage : {0, 1, 2}) {
    SCOPED_TRACE(stage);
    SpecParseResult r =
        Parse(Edit(Edit(Append("gpus_per_node = 2\nscheduler = \"slurm\"\n"), "micro_batch = 2",
                        "micro_batch = 1"),
                   "lr = 1e-3", "lr = 1e-3\nzero_stage = " + std::to_string(stage)));
    ASSERT_TRUE(r.ok()) << r.errors.front().ToString();
    EXPECT_EQ(r.spec->train.zero_stage, stage);
  }
}

TEST(CampaignSpec, Gpt2RefusesEachApertusKey) {
  for (std::string_view line :
       {"n_kv_head = 2", "d_ff = 32", "rope_theta = 10000", "rope_scaling = { factor = 8 }",
        "qk_norm = true", "activation = \"swiglu\"", "tie_embeddings = true", "norm_eps = 1e-6"}) {
    SCOPED_TRACE(line);
    const std::string_view key = line.substr(0, line.find(' '));
    SpecParseResult r = Parse(With("n_layer = 2", std::string(line) + "\nn_layer = 2"));
    ASSERT_EQ(r.errors.size(), 1u);
    EXPECT_EQ(r.errors[0].ToString(), "c.toml:5:" + std::to_string(key.size() + 4) + ": model." +
                                          std::string(key) +
                                          ": only for arch = \"apertus\" (it is \"gpt2\")");
  }
}

TEST(CampaignSpec, ApertusKeysTakeTheirDefaults) {
  SpecParseResult r = Parse(Apertus());
  ASSERT_TRUE(r.ok()) << r.errors.front().ToString();
  const ModelSpec& m = r.spec->model;
  EXPECT_EQ(m.arch, ModelArch::kApertus);
  EXPECT_EQ(m.n_kv_head, 2);  // n_head: no grouping
  EXPECT_EQ(m.kv_heads(), 2);
  EXPECT_EQ(m.d_ff, 32);
  EXPECT_DOUBLE_EQ(m.rope_theta, 500000.0);
  EXPECT_FALSE(m.rope_scaling.has_value());
  EXPECT_TRUE(m.qk_norm);
  EXPECT_EQ(m.activation, MlpActivation::kXielu);
  EXPECT_FALSE(m.tie_embeddings);
  EXPECT_DOUBLE_EQ(m.norm_eps, 1e-5);
  EXPECT_FALSE(r.spec->data.document_masking);
  EXPECT_EQ(r.spec->data.eod_token, -1);
  EXPECT_TRUE(r.spec->optimizer == OptimizerSpec());
  EXPECT_EQ(r.spec->optimizer.name, OptimizerKind::kAdamW);
}

TEST(CampaignSpec, RopeScalingKeysDefaultToLlama3s) {
  SpecParseResult r = Parse(Apertus("rope_scaling = { factor = 16 }\n"));
  ASSERT_TRUE(r.ok()) << r.errors.front().ToString();
  ASSERT_TRUE(r.spec->model.rope_scaling.has_value());
  EXPECT_DOUBLE_EQ(r.spec->model.rope_scaling->factor, 16.0);
  EXPECT_DOUBLE_EQ(r.spec->model.rope_scaling->low_freq_factor, 1.0);
  EXPECT_DOUBLE_EQ(r.spec->model.rope_scaling->high_freq_factor, 4.0);
  EXPECT_EQ(r.spec->model.rope_scaling->original_context, 8192);
}

TEST(CampaignSpec, AdemamixKeysTakeTheirDefaults) {
  SpecParseResult r = Parse(Append("\n[optimizer]\nname = \"ademamix\"\n"));
  ASSERT_TRUE(r.ok()) << r.errors.front().ToString();
  const OptimizerSpec& o = r.spec->optimizer;
  EXPECT_EQ(o.name, OptimizerKind::kAdemamix);
  EXPECT_DOUBLE_EQ(o.beta3, 0.9999);
  EXPECT_DOUBLE_EQ(o.alpha, 8.0);
  EXPECT_EQ(o.alpha_warmup_steps, 0);
  EXPECT_EQ(o.beta3_warmup_steps, 0);
}

// Every Apertus, document-masking and AdEMAMix key set away from its default.
constexpr std::string_view kApertusAdemamix = R"([campaign]
name = "apertus-ademamix"

[model]
arch = "apertus"
n_layer = 2
n_head = 4
n_kv_head = 2
d_model = 16
d_ff = 48
seq_len = 32
vocab_size = 128
rope_theta = 10000
qk_norm = false
activation = "swiglu"
tie_embeddings = true
norm_eps = 1e-6

[model.rope_scaling]
factor = 4
low_freq_factor = 2
high_freq_factor = 8
original_context = 16

[data]
train = "data/train_*.bin"
document_masking = true
eod_token = 3

[train]
total_steps = 10
micro_batch = 2
global_batch = 4
lr = 1e-3
beta1 = 0.8

[optimizer]
name = "ademamix"
beta3 = 0.999
alpha = 5
alpha_warmup_steps = 10
beta3_warmup_steps = 7

[checkpoint]
dir = "ckpt"
)";

TEST(CampaignSpec, ApertusWithAdemamixOnCpuRoundTrips) {
  SpecParseResult r = Parse(kApertusAdemamix);
  ASSERT_TRUE(r.ok()) << r.errors.front().ToString();
  const CampaignSpec& s = *r.spec;
  EXPECT_EQ(s.model.kv_heads(), 2);
  EXPECT_EQ(s.model.d_ff, 48);
  EXPECT_DOUBLE_EQ(s.model.rope_theta, 10000.0);
  EXPECT_TRUE(s.model.rope_scaling == (RopeScalingSpec{4.0, 2.0, 8.0, 16}));
  EXPECT_FALSE(s.model.qk_norm);
  EXPECT_EQ(s.model.activation, MlpActivation::kSwiglu);
  EXPECT_TRUE(s.model.tie_embeddings);
  EXPECT_DOUBLE_EQ(s.model.norm_eps, 1e-6);
  EXPECT_TRUE(s.data.document_masking);
  EXPECT_EQ(s.data.eod_token, 3);
  EXPECT_TRUE(s.optimizer == (OptimizerSpec{OptimizerKind::kAdemamix, 0.999, 5.0, 10, 7}));
  EXPECT_DOUBLE_EQ(s.train.beta1, 0.8);  // shared by both optimizers

  std::string text = FormatCampaignSpec(s);
  SpecParseResult again = Parse(text);
  ASSERT_TRUE(again.ok()) << again.errors.front().ToString() << "\n" << text;
  EXPECT_TRUE(*again.spec == s) << text;
  EXPECT_EQ(FormatCampaignSpec(*again.spec), text);
}

TEST(CampaignSpec, EffectiveGpt2SpecHoldsNoApertusOrAdemamixKeys) {
  SpecParseResult r = Parse(kBase);
  ASSERT_TRUE(r.ok());
  std::string text = FormatCampaignSpec(*r.spec);
  for (std::string_view key :
       {"n_kv_head", "d_ff", "rope_theta", "rope_scaling", "qk_norm", "activation",
        "tie_embeddings", "norm_eps", "document_masking", "eod_token", "beta3", "alpha"}) {
    EXPECT_EQ(text.find(key), std::string::npos) << key << " in\n" << text;
  }
  EXPECT_NE(text.find("\n[optimizer]\nname = \"adamw\"\n\n"), std::string::npos) << text;
}

TEST(CampaignSpec, TotalTokensRoundUpToWholeSteps) {
  // One step is global_batch × seq_len = 4 × 16 = 64 tokens.
  SpecParseResult r = Parse(With("total_steps = 10", "total_tokens = 641"));
  ASSERT_TRUE(r.ok()) << r.errors.front().ToString();
  EXPECT_EQ(r.spec->total_steps(), 11);
}

TEST(CampaignSpec, ReportsEveryErrorInFileOrder) {
  std::string text = Edit(Edit(With("n_layer = 2", "n_layer = 0"), "lr = 1e-3", "lr = -1.0"),
                          "name = \"t1\"", "name = \"t1\"\ncolour = \"blue\"");
  SpecParseResult r = Parse(text);
  ASSERT_EQ(r.errors.size(), 3u);
  EXPECT_EQ(r.errors[0].ToString(),
            "c.toml:3:1: campaign.colour: unknown key; allowed keys: description, name");
  EXPECT_EQ(r.errors[1].ToString(),
            "c.toml:6:11: model.n_layer: 0 is out of range; allowed: 1..1024");
  EXPECT_EQ(r.errors[2].ToString(),
            "c.toml:20:6: train.lr: -1 is out of range; allowed: > 0 and <= 10");
}

TEST(CampaignSpec, WsdScheduleWithCooldownIsAccepted) {
  SpecParseResult r = Parse(With(
      "lr = 1e-3", "lr = 1e-3\nlr_schedule = \"wsd\"\ncooldown_steps = 4\ncooldown = \"1-sqrt\""));
  ASSERT_TRUE(r.ok()) << r.errors.front().ToString();
  EXPECT_EQ(r.spec->train.lr_schedule, LrSchedule::kWsd);
  EXPECT_EQ(r.spec->train.cooldown_steps, 4);
  EXPECT_EQ(r.spec->train.cooldown, CooldownShape::kOneMinusSqrt);
}

std::vector<std::filesystem::path> Examples() {
  std::vector<std::filesystem::path> out;
  for (const auto& e : std::filesystem::directory_iterator(BELAY_SOURCE_DIR "/deploy/examples")) {
    if (e.path().extension() == ".toml") out.push_back(e.path());
  }
  return out;
}

TEST(CampaignSpec, ShippedExamplesRoundTripThroughTheEffectiveSpec) {
  std::vector<std::filesystem::path> examples = Examples();
  ASSERT_GE(examples.size(), 2u);
  for (const auto& path : examples) {
    SpecParseOptions opts;
    opts.check_paths = false;
    SpecParseResult first = LoadCampaignSpec(path, opts);
    ASSERT_TRUE(first.ok()) << first.errors.front().ToString();
    std::string text = FormatCampaignSpec(*first.spec);
    SpecParseResult second = ParseCampaignSpec(text, "effective.toml", opts);
    ASSERT_TRUE(second.ok()) << second.errors.front().ToString() << "\n" << text;
    EXPECT_TRUE(*first.spec == *second.spec) << path << "\n" << text;
    EXPECT_EQ(FormatCampaignSpec(*second.spec), text);
  }
}

TEST(CampaignSpec, MinNodesDefaultsToNodesAndRoundTrips) {
  SpecParseResult plain = Parse(
      Edit(Append("scheduler = \"slurm\"\nnodes = 3\n"), "global_batch = 4", "global_batch = 12"));
  ASSERT_TRUE(plain.ok()) << plain.errors.front().ToString();
  EXPECT_EQ(plain.spec->resources.min_nodes, 3);  // never shrinks unless asked
  SpecParseResult elastic = Parse(Edit(Append("scheduler = \"slurm\"\nnodes = 3\nmin_nodes = 1\n"),
                                       "global_batch = 4", "global_batch = 12"));
  ASSERT_TRUE(elastic.ok()) << elastic.errors.front().ToString();
  EXPECT_EQ(elastic.spec->resources.min_nodes, 1);
  for (const SpecParseResult* r : {&plain, &elastic}) {
    SpecParseResult again = Parse(FormatCampaignSpec(*r->spec));
    ASSERT_TRUE(again.ok()) << again.errors.front().ToString();
    EXPECT_TRUE(*again.spec == *r->spec);
  }
}

TEST(CampaignSpec, RoundTripKeepsEveryNonDefaultValue) {
  // Changing any field must change the formatted text, or the round trip could hide a
  // field the writer forgot.
  SpecParseResult base = Parse(kBase);
  ASSERT_TRUE(base.ok());
  CampaignSpec changed = *base.spec;
  changed.train.beta1 = 0.8;
  changed.train.eps = 1e-6;
  changed.data.shuffle = false;
  changed.data.format = DataFormat::kMegatron;
  changed.restart.max_node_failures = 7;
  changed.checkpoint.async = false;
  changed.restart.exclude_failed_nodes = false;
  SpecParseResult again = Parse(FormatCampaignSpec(changed));
  ASSERT_TRUE(again.ok()) << again.errors.front().ToString();
  EXPECT_TRUE(*again.spec == changed);
  EXPECT_FALSE(*again.spec == *base.spec);
}

TEST(CampaignSpec, SlurmKeysRoundTrip) {
  SpecParseResult r =
      Parse(Append("scheduler = \"slurm\"\ntime_limit = \"2h\"\npre_limit_signal = \"90s\"\n"
                   "presubmit = true\nsbatch_options = [\"--exclusive\", \"--constraint=gpu\"]\n"));
  ASSERT_TRUE(r.ok()) << r.errors.front().ToString();
  EXPECT_EQ(r.spec->resources.pre_limit_signal, std::chrono::seconds(90));
  EXPECT_EQ(r.spec->resources.sbatch_options,
            (std::vector<std::string>{"--exclusive", "--constraint=gpu"}));
  SpecParseResult again = Parse(FormatCampaignSpec(*r.spec));
  ASSERT_TRUE(again.ok()) << again.errors.front().ToString();
  EXPECT_TRUE(*again.spec == *r.spec);
}

TEST(CampaignSpec, EffectiveSpecsOfEarlierVersionsStillParse) {
  // Earlier belayd versions wrote pre_limit_signal for local campaigns and spare_nodes = 0
  // for Slurm ones into each campaign's effective spec, which belayd and the workers read
  // again for as long as the campaign runs.
  SpecParseResult local = Parse(kBase);
  ASSERT_TRUE(local.ok());
  SpecParseResult old_local = Parse(Edit(FormatCampaignSpec(*local.spec), "[restart]",
                                         "pre_limit_signal = \"10m\"\n\n[restart]"));
  ASSERT_TRUE(old_local.ok()) << old_local.errors.front().ToString();
  EXPECT_TRUE(*old_local.spec == *local.spec);
  SpecParseResult slurm = Parse(Append("scheduler = \"slurm\"\n"));
  ASSERT_TRUE(slurm.ok());
  SpecParseResult old_slurm =
      Parse(Edit(FormatCampaignSpec(*slurm.spec), "presubmit", "spare_nodes = 0\npresubmit"));
  ASSERT_TRUE(old_slurm.ok()) << old_slurm.errors.front().ToString();
  EXPECT_TRUE(*old_slurm.spec == *slurm.spec);
  // Versions before the Apertus keys wrote no [optimizer] section.
  const std::string no_optimizer =
      Edit(FormatCampaignSpec(*local.spec), "\n[optimizer]\nname = \"adamw\"\n", "");
  ASSERT_EQ(no_optimizer.find("optimizer"), std::string::npos) << no_optimizer;
  SpecParseResult old_adamw = Parse(no_optimizer);
  ASSERT_TRUE(old_adamw.ok()) << old_adamw.errors.front().ToString();
  EXPECT_TRUE(*old_adamw.spec == *local.spec);
}

TEST(SbatchOption, WhatTheSlurmBackendSetsParsesAndNothingElse) {
  using Kind = SbatchOption::Kind;
  for (auto [text, kind, value] :
       {std::tuple{"--qos=high", Kind::kQos, "high"},
        std::tuple{"--reservation=maint", Kind::kReservation, "maint"},
        std::tuple{"--constraint=gpu&nvme", Kind::kConstraint, "gpu&nvme"},
        std::tuple{"--exclusive", Kind::kExclusive, ""}}) {
    absl::StatusOr<SbatchOption> o = ParseSbatchOption(text);
    ASSERT_TRUE(o.ok()) << text << ": " << o.status();
    EXPECT_EQ(o->kind, kind) << text;
    EXPECT_EQ(o->value, value) << text;
  }
  for (std::string_view text : {"--qos", "--qos=", "--qos high", "-q high", "--exclusive=user",
                                "--mem=4G", "--gres=gpu:4", "qos=high", "-", ""}) {
    absl::StatusOr<SbatchOption> o = ParseSbatchOption(text);
    EXPECT_EQ(o.status().code(), absl::StatusCode::kInvalidArgument) << text;
  }
  EXPECT_EQ(
      ParseSbatchOption("-N4").status().message(),
      "\"-N4\" is set by belay itself (-N); use the matching [resources] key or leave it to belay");
  EXPECT_EQ(ParseSbatchOption("nodes=4").status().message(),
            "\"nodes=4\" is not an sbatch option; allowed: \"--name=value\"");
}

class SpecFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path(::testing::TempDir()) /
           ("spec_files_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_ / "data");
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  void Write(const std::filesystem::path& rel, std::string_view text) {
    std::ofstream(dir_ / rel, std::ios::binary) << text;
  }
  std::filesystem::path dir_;
};

TEST_F(SpecFiles, DataGlobsAreCheckedAgainstTheFileSystem) {
  Write("c.toml", kBase);
  SpecParseResult r = LoadCampaignSpec(dir_ / "c.toml");
  ASSERT_EQ(r.errors.size(), 2u);
  EXPECT_EQ(r.errors[0].ToString(), (dir_ / "c.toml").string() + ":12:9: data.train: \"" +
                                        (dir_ / "data/train_*.bin").string() +
                                        "\" matches no file");
  EXPECT_EQ(r.errors[1].line, 13u);
  Write("data/train_000.bin", "x");
  Write("data/val_000.bin", "x");
  r = LoadCampaignSpec(dir_ / "c.toml");
  EXPECT_TRUE(r.ok()) << r.errors.front().ToString();
}

TEST_F(SpecFiles, CheckpointDirThatIsAFileIsRejected) {
  Write("c.toml", kBase);
  Write("data/train_000.bin", "x");
  Write("data/val_000.bin", "x");
  Write("ckpt", "not a directory");
  SpecParseResult r = LoadCampaignSpec(dir_ / "c.toml");
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors[0].ToString(), (dir_ / "c.toml").string() + ":22:7: checkpoint.dir: \"" +
                                        (dir_ / "ckpt").string() +
                                        "\" exists and is not a directory");
}

TEST_F(SpecFiles, UnreadableAndOversizedFilesAreReportedNotRead) {
  SpecParseResult missing = LoadCampaignSpec(dir_ / "none.toml");
  ASSERT_EQ(missing.errors.size(), 1u);
  EXPECT_EQ(missing.errors[0].ToString(),
            (dir_ / "none.toml").string() + ":1:1: cannot open: No such file or directory");

  SpecParseResult directory = LoadCampaignSpec(dir_);
  ASSERT_EQ(directory.errors.size(), 1u);
  EXPECT_EQ(directory.errors[0].message, "is a directory, not a campaign file");

  Write("big.toml", std::string(10 << 20, '#'));
  SpecParseResult big = LoadCampaignSpec(dir_ / "big.toml");
  ASSERT_EQ(big.errors.size(), 1u);
  EXPECT_EQ(big.errors[0].message,
            "file is 10485760 bytes; a campaign file may be at most 1048576 bytes");
}

}  // namespace
}  // namespace belay
