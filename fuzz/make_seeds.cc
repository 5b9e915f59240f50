// Writes the generated seeds of fuzz/corpus/: small valid inputs for each harness, made with
// belay's own writers where it has them. Usage: belay_fuzz_seeds <corpus dir>. The campaign
// spec seeds are plain campaign files and are kept by hand.
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <span>
#include <string>
#include <vector>

#include "common/ckpt/manifest.h"
#include "fuzz/service_sessions.pb.h"
#include "fuzz/world_spec.h"
#include "worker/ckpt/shard_file.h"
#include "worker/data/shard.h"

namespace belay::fuzz {
namespace {

namespace fs = std::filesystem;

fs::path g_out;

void Save(const std::string& harness, const std::string& name, const std::string& bytes) {
  fs::create_directories(g_out / harness);
  std::ofstream(g_out / harness / name, std::ios::binary) << bytes;
}

std::string Slurp(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void Fail(const std::string& what) {
  std::fprintf(stderr, "belay_fuzz_seeds: %s\n", what.c_str());
  std::exit(1);
}

template <typename T>
void Put(std::string* out, T v) {
  out->append(reinterpret_cast<const char*>(&v), sizeof v);
}

// llm.c shards: vocabulary selector 0 (257 tokens), then the file.
void TokenShards(const fs::path& tmp) {
  std::vector<int32_t> tokens;
  for (int i = 0; i < 40; ++i) tokens.push_back((i * 37) % 257);
  for (int32_t version : {data::kShardVersionU16, data::kShardVersionU32}) {
    const fs::path p = tmp / "shard.bin";
    if (!data::WriteTokenShard(p, tokens, version).ok()) Fail("WriteTokenShard");
    Save("llmc_shard", "v" + std::to_string(version) + "_40_tokens",
         std::string(1, '\0') + Slurp(p));
  }
}

// Megatron: vocabulary selector, index length, index, .bin (documents of the given lengths).
void Megatron() {
  for (uint8_t dtype : {data::kMegatronDTypeUint16, data::kMegatronDTypeInt32}) {
    const std::vector<int32_t> lengths = {5, 0, 9, 3};
    const int width = dtype == data::kMegatronDTypeUint16 ? 2 : 4;
    std::string idx(data::kMegatronIndexMagic);
    Put(&idx, uint64_t{1});
    Put(&idx, dtype);
    Put(&idx, static_cast<uint64_t>(lengths.size()));
    Put(&idx, static_cast<uint64_t>(lengths.size() + 1));
    for (int32_t l : lengths) Put(&idx, l);
    int64_t at = 0;
    for (int32_t l : lengths) {
      Put(&idx, at);
      at += int64_t{l} * width;
    }
    for (int64_t d = 0; d <= static_cast<int64_t>(lengths.size()); ++d) Put(&idx, d);
    std::string bin;
    for (int64_t t = 0; t < at / width; ++t) {
      if (width == 2)
        Put(&bin, static_cast<uint16_t>(t * 11 % 257));
      else
        Put(&bin, static_cast<int32_t>(t * 11 % 257));
    }
    std::string input(1, '\0');
    Put(&input, static_cast<uint32_t>(idx.size()));
    Save("megatron",
         dtype == data::kMegatronDTypeUint16 ? "uint16_4_documents" : "int32_4_documents",
         input + idx + bin);
  }
}

// A checkpoint shard of a few tensors, one split in two ranges, with metadata.
void CheckpointShard(const fs::path& tmp) {
  const std::vector<float> w = {0.5f, -1.0f, 2.0f, 3.5f, 0.0f, 1.0f};
  const std::vector<int64_t> step = {42};
  const std::vector<uint8_t> rng = {1, 2, 3, 4, 5, 6, 7, 8};
  ckpt::ShardWriter writer;
  if (!writer.Add("h.0.attn.w", 0, 10, std::span(w).first(3)).ok() ||
      !writer.Add("h.0.attn.w", 6, 10, std::span(w).last(3)).ok() ||
      !writer.Add("step", 0, 1, step).ok() || !writer.Add("rng", 0, 8, rng).ok()) {
    Fail("ShardWriter::Add");
  }
  writer.SetMetadata(R"({"step":42,"world_size":2,"rank":0})");
  const fs::path p = tmp / "rank_00000.bin";
  if (!writer.Write(p).ok()) Fail("ShardWriter::Write");
  Save("ckpt_shard", "three_tensors", Slurp(p));
}

void Manifests() {
  ckpt::Manifest m;
  m.campaign = "tiny-1";
  m.step = 40;
  m.world_size = 2;
  m.created_unix = 1'800'000'000;
  m.metrics = {{"loss", 3.25}, {"tokens", 81920}};
  m.shards = {{0, "rank_00000.bin", 4096, 0x0123456789abcdefULL},
              {1, "rank_00001.bin", 4032, 0xfedcba9876543210ULL}};
  Save("manifest", "no_shard_map.json", ckpt::ManifestToJson(m));
  ckpt::ShardMap map;
  map.Add("wte", 100, {0, 0, 50});
  map.Add("wte", 100, {1, 50, 50});
  map.Add("step", 1, {0, 0, 1});
  m.shard_map = map;
  Save("manifest", "shard_map.json", ckpt::ManifestToJson(m));
}

WorkerLinkCall* Call(WorkerLinkSession* s, Token token = TOKEN_CURRENT) {
  WorkerLinkCall* c = s->add_calls();
  c->set_token(token);
  return c;
}

// Worker-link sessions: what two ranks of an attempt say over its life.
void AddRegistration(WorkerLinkSession* s) {
  for (int rank : {1, 0}) {
    v1::RegisterRequest* r = Call(s)->mutable_register_();
    r->set_rank(rank);
    r->set_world_size(2);
    r->set_hostname("node" + std::to_string(rank));
    r->set_pid(100 + rank);
  }
  for (int rank : {1, 0}) {
    v1::RendezvousRequest* r = Call(s)->mutable_rendezvous();
    r->set_rank(rank);
    r->set_barrier("nccl-init");
    r->set_generation(1);
    if (rank == 0) r->set_blob("unique-id");
  }
}

void AddSteps(WorkerLinkSession* s, int64_t first, int64_t last, double loss) {
  v1::ReportStepsRequest* r = Call(s)->mutable_report_steps();
  for (int64_t step = first; step <= last; ++step) {
    v1::StepMetrics* m = r->add_steps();
    m->set_step(step);
    m->set_loss(loss - 0.01 * static_cast<double>(step));
    m->set_lr(1e-3);
    m->set_tokens_per_s(1000);
    m->set_step_time_s(0.5);
    m->set_tokens_seen(step * 16);
    m->add_rank_compute_time_s(0.4);
    m->add_rank_compute_time_s(0.45);
    m->add_rank_step_time_s(0.5);
    m->add_rank_step_time_s(0.5);
  }
  v1::HeartbeatRequest* h = Call(s)->mutable_heartbeat();
  h->set_rank(1);
  h->set_step(last);
  h->set_phase(v1::WORKER_PHASE_FORWARD);
  Call(s)->mutable_tick()->set_advance_s(2);
}

void AddCheckpoint(WorkerLinkSession* s, int64_t step) {
  for (int rank : {0, 1}) {
    WorkerLinkCall* c = Call(s);
    c->set_fix_shard_path(true);
    v1::CheckpointShard* shard = c->mutable_report_checkpoint_shard()->mutable_shard();
    shard->set_step(step);
    shard->set_rank(rank);
    shard->set_bytes(4096);
    shard->set_xxh3(0x1234 + static_cast<uint64_t>(rank));
    shard->set_tensor_count(1);
    v1::TensorSlice* t = shard->add_tensors();
    t->set_name("wte");
    t->set_dtype("f32");
    t->add_shape(16);
    t->add_shape(8);
    t->set_element_offset(rank * 64);
    t->set_element_count(64);
    t->set_file_offset(128);
    t->set_bytes(256);
    shard->set_write_time_s(0.1);
    shard->set_blocked_time_s(0.05);
  }
}

WorkerLinkSession TrainingRun() {
  WorkerLinkSession s;
  AddRegistration(&s);
  AddSteps(&s, 1, 4, 5.5);
  v1::EvalMetrics* e = Call(&s)->mutable_report_steps()->add_evals();
  e->set_step(4);
  e->set_dataset("val");
  e->set_loss(5.4);
  AddCheckpoint(&s, 4);
  AddSteps(&s, 5, 8, 5.5);
  AddCheckpoint(&s, 8);
  for (int rank : {0, 1}) {
    v1::FinishRequest* f = Call(&s)->mutable_finish();
    f->set_rank(rank);
    f->set_final_step(8);
    f->set_exit_kind(v1::EXIT_KIND_COMPLETED);
  }
  Call(&s)->mutable_tick()->set_advance_s(1);
  return s;
}

// Two ranks register, meet, train steps 1-4 and commit a checkpoint of step 4.
WorkerLinkSession FirstCheckpoint() {
  WorkerLinkSession s;
  AddRegistration(&s);
  AddSteps(&s, 1, 4, 5.5);
  AddCheckpoint(&s, 4);
  return s;
}

WorkerLinkSession CrashAndRestart() {
  WorkerLinkSession s = FirstCheckpoint();
  AddSteps(&s, 5, 6, 5.5);
  EndJob* end = Call(&s)->mutable_end_job();
  end->set_exit_code(1);
  end->set_failed_rank(1);
  end->set_signal(9);
  Call(&s)->mutable_tick()->set_advance_s(5);
  AddRegistration(&s);
  Call(&s, TOKEN_FIRST)->mutable_heartbeat()->set_rank(0);
  AddSteps(&s, 5, 6, 5.5);
  return s;
}

WorkerLinkSession NanAndHang() {
  WorkerLinkSession s = FirstCheckpoint();
  AddSteps(&s, 5, 5, NAN);
  Call(&s)->mutable_tick()->set_advance_s(30);
  AddRegistration(&s);
  AddSteps(&s, 5, 6, 5.5);
  Call(&s)->mutable_tick()->set_advance_s(3600);
  v1::ReportCheckpointShardRequest* failed = Call(&s)->mutable_report_checkpoint_shard();
  failed->mutable_shard()->set_step(8);
  failed->set_error("disk full");
  return s;
}

void SaveSession(const std::string& harness, const std::string& name,
                 const google::protobuf::Message& m) {
  std::string bytes;
  if (!m.SerializeToString(&bytes)) Fail("serialize " + name);
  Save(harness, name, bytes);
}

CoordinatorCall* Api(CoordinatorSession* s, Caller caller = CALLER_OWNER) {
  CoordinatorCall* c = s->add_calls();
  c->set_caller(caller);
  c->set_fix_ids(true);
  return c;
}

// Every read of the owner's running campaign, with worker reports in between.
CoordinatorSession OwnerReads() {
  CoordinatorSession s;
  const WorkerLinkSession run = TrainingRun();
  for (const WorkerLinkCall& w : run.calls()) {
    *Api(&s)->mutable_worker() = w;
    if (w.has_report_steps()) {
      Api(&s)->mutable_get_campaign();
      Api(&s)->mutable_query_metrics()->set_max_points(3);
    }
  }
  v1::QueryMetricsRequest* q = Api(&s)->mutable_query_metrics();
  q->set_first_step(2);
  q->set_last_step(6);
  q->set_include_raw(true);
  Api(&s)->mutable_list_events()->set_limit(5);
  Api(&s)->mutable_list_checkpoints()->set_include_shards(true);
  Api(&s)->mutable_list_campaigns();
  Api(&s)->mutable_list_nodes();
  v1::GetLogsRequest* logs = Api(&s)->mutable_get_logs();
  logs->set_rank(0);
  logs->set_tail_bytes(10);
  Api(&s)->mutable_get_daemon_info();
  Api(&s)->mutable_cancel_campaign()->set_reason("enough");
  Api(&s)->mutable_worker()->mutable_tick()->set_advance_s(61);
  Api(&s)->mutable_get_campaign();
  return s;
}

// Root submits a second campaign and lists everyone's; another user and an unknown peer try.
CoordinatorSession Submissions() {
  CoordinatorSession s;
  v1::SubmitCampaignRequest* sub = Api(&s, CALLER_ROOT)->mutable_submit_campaign();
  sub->set_spec_file("second.toml");
  std::string spec(kWorldSpec);
  spec.replace(spec.find("\"fuzz\""), 6, "\"second\"");
  sub->set_spec_toml(spec);

  v1::SubmitCampaignRequest* check = Api(&s, CALLER_OWNER)->mutable_submit_campaign();
  *check = *sub;
  check->set_validate_only(true);
  v1::ListCampaignsRequest* all = Api(&s, CALLER_ROOT)->mutable_list_campaigns();
  all->set_all_users(true);
  all->add_states(v1::CAMPAIGN_STATE_RUNNING);
  all->set_limit(1);
  Api(&s, CALLER_OTHER_USER)->mutable_get_campaign();
  Api(&s, CALLER_OTHER_USER)->mutable_cancel_campaign();
  Api(&s, CALLER_UNKNOWN)->mutable_list_campaigns();
  Api(&s, CALLER_ROOT)->mutable_get_daemon_info();
  Api(&s, CALLER_ROOT)->mutable_worker()->mutable_tick()->set_advance_s(1);
  Api(&s, CALLER_ROOT)->mutable_list_nodes()->set_excluded_only(true);
  return s;
}

}  // namespace
}  // namespace belay::fuzz

int main(int argc, char** argv) {
  using namespace belay::fuzz;
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
    return 2;
  }
  g_out = argv[1];
  const fs::path tmp =
      fs::temp_directory_path() / ("belay_fuzz_seeds_" + std::to_string(::getpid()));
  fs::create_directories(tmp);
  TokenShards(tmp);
  Megatron();
  CheckpointShard(tmp);
  Manifests();
  SaveSession("worker_link", "training_run", TrainingRun());
  SaveSession("worker_link", "crash_and_restart", CrashAndRestart());
  SaveSession("worker_link", "nan_and_hang", NanAndHang());
  SaveSession("coordinator", "owner_reads", OwnerReads());
  SaveSession("coordinator", "submissions", Submissions());
  fs::remove_all(tmp);
  return 0;
}
