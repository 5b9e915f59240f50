// StateCollector: campaigns and nodes as Prometheus samples.
#include "daemon/metrics/state_collector.h"

#include <algorithm>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>

#include "common/strings.h"
#include "daemon/store/event_log.h"
#include "daemon/store/records.h"
#include "daemon/supervisor/goodput.h"
#include "daemon/supervisor/policy.h"
#include "spdlog/spdlog.h"

namespace belay::metrics {
namespace {

namespace pb = ::belay::v1;
using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;
using Labels = std::vector<ClientMetric::Label>;

double Seconds(TimePoint::duration d) { return std::chrono::duration<double>(d).count(); }

// The families of one scrape, in the order they are declared; samples are added by name.
class Families {
 public:
  void Declare(std::string name, MetricType type, std::string help) {
    index_[name] = families_.size();
    families_.push_back({std::move(name), std::move(help), type, {}});
  }
  void Add(const std::string& name, Labels labels, double value) {
    MetricFamily& f = families_.at(index_.at(name));
    ClientMetric m;
    m.label = std::move(labels);
    if (f.type == MetricType::Counter) {
      m.counter.value = value;
    } else {
      m.gauge.value = value;
    }
    f.metric.push_back(std::move(m));
  }
  std::vector<MetricFamily> Take() && { return std::move(families_); }

 private:
  std::vector<MetricFamily> families_;
  std::map<std::string, size_t> index_;
};

Labels With(Labels base, std::initializer_list<ClientMetric::Label> more) {
  base.insert(base.end(), more);
  return base;
}

// The lower-case state names of the belay_campaign_state series, one per state.
constexpr std::pair<pb::CampaignState, const char*> kStates[] = {
    {pb::CAMPAIGN_STATE_SUBMITTED, "submitted"},   {pb::CAMPAIGN_STATE_RUNNING, "running"},
    {pb::CAMPAIGN_STATE_RECOVERING, "recovering"}, {pb::CAMPAIGN_STATE_COMPLETED, "completed"},
    {pb::CAMPAIGN_STATE_FAILED, "failed"},         {pb::CAMPAIGN_STATE_CANCELLED, "cancelled"}};

const char* SchedulerName(pb::SchedulerKind k) {
  return k == pb::SCHEDULER_KIND_SLURM ? "slurm" : "local";
}

void DeclareAll(Families& f) {
  f.Declare("belay_campaign_info", MetricType::Gauge,
            "Always 1; names a campaign exported here (running, queued, or ended recently)");
  f.Declare("belay_campaign_state", MetricType::Gauge,
            "1 for the campaign's current state, 0 for the others");
  f.Declare("belay_campaign_step", MetricType::Gauge, "Last completed step");
  f.Declare("belay_campaign_total_steps", MetricType::Gauge, "Step at which the campaign is done");
  f.Declare("belay_campaign_tokens", MetricType::Gauge,
            "Training tokens consumed by the steps up to the current one");
  f.Declare("belay_campaign_restarts_total", MetricType::Counter,
            "Restarts charged against the campaign's max_restarts");
  f.Declare("belay_campaign_max_restarts", MetricType::Gauge, "The campaign's max_restarts");
  f.Declare("belay_campaign_rollbacks_total", MetricType::Counter,
            "Rollbacks (nan, loss spike) charged against the campaign's max_rollbacks");
  f.Declare("belay_campaign_max_rollbacks", MetricType::Gauge, "The campaign's max_rollbacks");
  f.Declare("belay_campaign_train_loss", MetricType::Gauge,
            "Training loss of the last step report, in nats per token");
  f.Declare("belay_campaign_tokens_per_second", MetricType::Gauge,
            "Throughput over all ranks in the last step report");
  f.Declare("belay_campaign_last_step_age_seconds", MetricType::Gauge,
            "Seconds since the last step report");
  f.Declare("belay_campaign_validation_loss", MetricType::Gauge,
            "Loss of the last evaluation of each dataset, in nats per token");
  f.Declare("belay_campaign_last_checkpoint_step", MetricType::Gauge,
            "Step of the newest committed checkpoint");
  f.Declare("belay_campaign_last_checkpoint_age_seconds", MetricType::Gauge,
            "Seconds since the newest committed checkpoint was committed");
  f.Declare("belay_campaign_goodput_rank_hours", MetricType::Gauge,
            "The goodput ledger's rank-hours by bucket (spent = productive + the others)");
  f.Declare("belay_node_reputation", MetricType::Gauge,
            "Node reputation in [0, 1] as of now (1: no failures attributed recently)");
  f.Declare("belay_node_excluded", MetricType::Gauge,
            "1 while belay keeps new attempts off the node");
  f.Declare("belay_node_failures_attributed_total", MetricType::Counter,
            "Attempt failures attributed to the node");
}

// The newest step report of the campaign's newest attempt `current` (nullptr: none yet), or
// of the attempt before it while `current` has reported none. Step records are keyed by step:
// an attempt that resumed from a checkpoint rewrites the steps after it one by one, and until
// it passes the step its predecessor reached, the highest record is the predecessor's. Its
// own newest one is then found by reading forward from its stored last step (at most
// attempt_write_interval old) to the first record another attempt wrote.
absl::StatusOr<std::optional<pb::StepMetrics>> LastStepReport(const store::Store& store,
                                                              const std::string& id,
                                                              const pb::Attempt* current) {
  absl::StatusOr<std::vector<pb::StepMetrics>> highest =
      store::ListStepMetrics(store, id, 0, -1, 1, true);
  if (!highest.ok()) return highest.status();
  if (highest->empty()) return std::nullopt;
  std::optional<pb::StepMetrics> last = highest->back();
  if (current == nullptr || current->first_step() == 0 ||
      last->attempt_number() == current->number()) {
    return last;
  }
  constexpr size_t kPage = 256;
  for (int64_t from = std::max(current->first_step(), current->last_step());;) {
    absl::StatusOr<std::vector<pb::StepMetrics>> page =
        store::ListStepMetrics(store, id, from, -1, kPage);
    if (!page.ok()) return page.status();
    for (pb::StepMetrics& m : *page) {
      if (m.attempt_number() != current->number()) return last;
      last = std::move(m);
    }
    if (page->size() < kPage) return last;
    from = last->step() + 1;
  }
}

// The samples of one campaign; a failed read leaves the samples that need it out.
void AddCampaign(const store::Store& store, const pb::Campaign& c, TimePoint now, Families& f) {
  const std::string owner = c.owner_name().empty() ? Cat("uid", c.owner_uid()) : c.owner_name();
  const Labels id = {{"campaign", c.id()}, {"owner", owner}};
  f.Add("belay_campaign_info",
        With(id, {{"name", c.name()},
                  {"owner_uid", Cat(c.owner_uid())},
                  {"scheduler", SchedulerName(c.scheduler())}}),
        1);
  for (const auto& [state, name] : kStates)
    f.Add("belay_campaign_state", With(id, {{"state", name}}), c.state() == state ? 1 : 0);
  f.Add("belay_campaign_step", id, static_cast<double>(c.current_step()));
  f.Add("belay_campaign_total_steps", id, static_cast<double>(c.total_steps()));
  f.Add("belay_campaign_tokens", id, static_cast<double>(c.tokens_seen()));
  f.Add("belay_campaign_restarts_total", id, c.restarts_used());
  f.Add("belay_campaign_max_restarts", id, c.max_restarts());
  f.Add("belay_campaign_rollbacks_total", id, c.rollbacks_used());
  f.Add("belay_campaign_max_rollbacks", id, c.max_rollbacks());

  absl::StatusOr<std::vector<pb::Attempt>> attempts = store::ListAttempts(store, c.id());
  absl::StatusOr<std::optional<pb::StepMetrics>> last = LastStepReport(
      store, c.id(), attempts.ok() && !attempts->empty() ? &attempts->back() : nullptr);
  if (last.ok() && last->has_value()) {
    const pb::StepMetrics& m = **last;
    const Labels at = With(id, {{"attempt", Cat(m.attempt_number())}});
    f.Add("belay_campaign_train_loss", at, m.loss());
    f.Add("belay_campaign_tokens_per_second", at, m.tokens_per_s());
    f.Add("belay_campaign_last_step_age_seconds", at,
          Seconds(now - store::FromTimestamp(m.time())));
  }
  // The newest record of each dataset among the last few (a campaign evaluates one or a few).
  absl::StatusOr<std::vector<pb::EvalMetrics>> evals =
      store::ListLatestEvalMetrics(store, c.id(), 16);
  if (evals.ok()) {
    std::map<std::string, const pb::EvalMetrics*> newest;
    for (const pb::EvalMetrics& e : *evals) newest.emplace(e.dataset(), &e);
    for (const auto& [dataset, e] : newest) {
      f.Add("belay_campaign_validation_loss",
            With(id, {{"attempt", Cat(e->attempt_number())}, {"dataset", dataset}}), e->loss());
    }
  }
  absl::StatusOr<std::vector<pb::Checkpoint>> checkpoints = store::ListCheckpoints(store, c.id());
  for (const absl::Status& s :
       {attempts.status(), last.status(), evals.status(), checkpoints.status()}) {
    if (!s.ok()) {
      spdlog::warn("metrics of campaign {} left out: {}", c.id(), s.ToString());
      break;
    }
  }
  if (c.has_last_checkpoint_step())
    f.Add("belay_campaign_last_checkpoint_step", id, static_cast<double>(c.last_checkpoint_step()));
  if (checkpoints.ok() && c.has_last_checkpoint_step()) {
    for (const pb::Checkpoint& ck : *checkpoints) {
      if (ck.step() == c.last_checkpoint_step() && ck.has_committed_time()) {
        f.Add("belay_campaign_last_checkpoint_age_seconds", id,
              Seconds(now - store::FromTimestamp(ck.committed_time())));
      }
    }
  }
  if (attempts.ok() && checkpoints.ok()) {
    const pb::GoodputSummary g = supervisor::ComputeGoodput(*attempts, *checkpoints, now).summary();
    for (const auto& [bucket, hours] : {std::pair{"spent", g.spent_rank_hours()},
                                        {"productive", g.productive_rank_hours()},
                                        {"lost_work", g.lost_work_rank_hours()},
                                        {"detection", g.detection_rank_hours()},
                                        {"restart", g.restart_rank_hours()},
                                        {"checkpoint", g.checkpoint_rank_hours()}}) {
      f.Add("belay_campaign_goodput_rank_hours", With(id, {{"bucket", bucket}}), hours);
    }
  }
}

}  // namespace

std::vector<MetricFamily> StateCollector::Collect() const {
  const TimePoint now = clock_.Now();
  Families f;
  DeclareAll(f);
  absl::StatusOr<std::vector<pb::Campaign>> campaigns = store::ListCampaigns(store_);
  if (!campaigns.ok())
    spdlog::warn("metrics: cannot list campaigns: {}", campaigns.status().ToString());
  for (const pb::Campaign& c : campaigns.ok() ? *campaigns : std::vector<pb::Campaign>{}) {
    if (supervisor::IsTerminal(c.state()) &&
        (!c.has_end_time() || now - store::FromTimestamp(c.end_time()) > options_.ended_window)) {
      continue;
    }
    AddCampaign(store_, c, now, f);
  }
  absl::StatusOr<std::vector<pb::Node>> nodes = store::ListNodes(store_);
  if (!nodes.ok()) spdlog::warn("metrics: cannot list nodes: {}", nodes.status().ToString());
  for (const pb::Node& stored : nodes.ok() ? *nodes : std::vector<pb::Node>{}) {
    const pb::Node n = supervisor::Decayed(stored, now, node_health_);
    const Labels node = {{"node", n.name()}};
    f.Add("belay_node_reputation", node, n.reputation());
    f.Add("belay_node_excluded", node, n.excluded() ? 1 : 0);
    f.Add("belay_node_failures_attributed_total", node, n.failures_attributed());
  }
  return std::move(f).Take();
}

}  // namespace belay::metrics
