// belayd's own metrics: the worker link's requests, store writes, supervision rounds and
// slurmctld calls, counted where they happen (a counter increment or a histogram observation
// each: a few atomic operations and one short mutex inside prometheus-cpp).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/scheduler/scheduler.h"
#include "daemon/store/store.h"
#include "grpcpp/support/server_interceptor.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace belay::metrics {

// The families and the registry they live in (a prometheus::Collectable to register with the
// exposer). Thread-safety: every method may be called from any thread.
class DaemonMetrics {
 public:
  // `worker_link_methods`: the worker link's method names ("Register", ...); requests for any
  // other name count as method="unknown", so that a client cannot grow the label set.
  // `controller_calls`: the Slurm backend's call counts (empty: no such samples).
  DaemonMetrics(std::vector<std::string> worker_link_methods,
                std::function<sched::ControllerCalls()> controller_calls);

  // What to register with the exposer: the registry of the families, and the slurmctld call
  // counts read when scraped.
  std::vector<std::shared_ptr<prometheus::Collectable>> collectables() const {
    return {registry_, controller_calls_};
  }

  // One worker link request: its method ("/belay.v1.WorkerLink/Register" or "Register"), the
  // gRPC status code it was answered with, and how long it took.
  void WorkerLinkRequest(std::string_view method, grpc::StatusCode code, double seconds);
  void StoreWrite(store::Durability durability, double seconds);
  void SupervisorRound(double seconds);

  // A gRPC interceptor factory that reports each request of the server it is installed on to
  // WorkerLinkRequest (for ServerBuilder::experimental().SetInterceptorCreators).
  std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> WorkerLinkInterceptors();

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>& link_requests_;
  prometheus::Family<prometheus::Histogram>& link_latency_;
  std::map<std::string, prometheus::Histogram*, std::less<>> link_latency_by_method_;
  prometheus::Family<prometheus::Histogram>& store_writes_;
  prometheus::Histogram& synced_writes_;
  prometheus::Histogram& buffered_writes_;
  prometheus::Histogram& rounds_;
  std::shared_ptr<prometheus::Collectable> controller_calls_;
};

// A Store that times every Write into DaemonMetrics::StoreWrite and forwards everything.
class TimedStore final : public store::Store {
 public:
  TimedStore(store::Store& inner, DaemonMetrics& metrics) : inner_(inner), metrics_(metrics) {}

  absl::Status Write(const store::WriteBatch& batch, store::Durability durability) override;
  absl::StatusOr<std::optional<std::string>> Get(store::Table table,
                                                 std::string_view key) const override {
    return inner_.Get(table, key);
  }
  absl::StatusOr<store::Entries> Scan(store::Table table,
                                      const store::ScanOptions& options) const override {
    return inner_.Scan(table, options);
  }
  absl::Status write_error() const override { return inner_.write_error(); }

 private:
  store::Store& inner_;
  DaemonMetrics& metrics_;
};

// The gRPC status code's canonical name ("OK", "UNAVAILABLE", ...).
std::string CodeName(grpc::StatusCode code);

}  // namespace belay::metrics
