// The campaign and node metrics of belayd's /metrics: read from the store when Prometheus
// scrapes, so that they are as fresh as the store and cost nothing between scrapes.
#pragma once

#include <chrono>
#include <vector>

#include "common/clock.h"
#include "daemon/store/store.h"
#include "daemon/supervisor/node_health.h"
#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"

namespace belay::metrics {

struct StateCollectorOptions {
  // Campaigns are exported while they have not ended, and for this long after they ended;
  // older ones leave /metrics (their series go stale in Prometheus) so that the number of
  // series stays bounded by the campaigns of the last day, not of the store's whole history.
  std::chrono::hours ended_window{24};
};

// A prometheus::Collectable over the store (see docs/monitoring.md for the metrics).
//
// Why the store and not the Supervisor's memory: the store is what the supervisor writes
// every transition and every step report to, and it is safe to read from any thread without
// the supervisor's mutex. A scrape therefore never waits for a supervision round and never
// holds one up (a round that waited on a slow scraper would delay hang detection). What it
// costs is a few reads per exported campaign per scrape: the campaign, its attempts and
// checkpoint records (for the goodput ledger), its last step and evaluation reports.
//
// Thread-safety: Collect may run on several exposer threads at once; it only reads.
class StateCollector final : public prometheus::Collectable {
 public:
  StateCollector(const store::Store& store, const Clock& clock,
                 supervisor::NodeHealthPolicy node_health, StateCollectorOptions options = {})
      : store_(store), clock_(clock), node_health_(node_health), options_(options) {}

  // The families, each present (possibly without samples) even when a store read fails;
  // a failed read is logged and leaves that campaign's or the nodes' samples out.
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  const store::Store& store_;
  const Clock& clock_;
  const supervisor::NodeHealthPolicy node_health_;
  const StateCollectorOptions options_;
};

}  // namespace belay::metrics
