// DaemonMetrics: the families, the worker link's interceptor, the timed store.
#include "daemon/metrics/daemon_metrics.h"

#include <chrono>

#include "absl/status/status.h"
#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"

namespace belay::metrics {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Worker link calls take from well under a millisecond (a heartbeat) to seconds (a rendezvous
// waits for every rank); store writes from microseconds (buffered) to a synced WAL's
// milliseconds; a supervision round polls the scheduler once for every running job.
const prometheus::Histogram::BucketBoundaries kLinkBuckets = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
const prometheus::Histogram::BucketBoundaries kWriteBuckets = {
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1};
const prometheus::Histogram::BucketBoundaries kRoundBuckets = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};

// The Slurm backend's counts, read when scraped (they are atomics in the backend).
class ControllerCallsCollector final : public prometheus::Collectable {
 public:
  explicit ControllerCallsCollector(std::function<sched::ControllerCalls()> calls)
      : calls_(std::move(calls)) {}

  std::vector<prometheus::MetricFamily> Collect() const override {
    if (!calls_) return {};
    const sched::ControllerCalls c = calls_();
    std::vector<prometheus::MetricFamily> out(2);
    out[0] = {"belay_slurm_controller_calls_total",
              "libslurm calls belayd made to slurmctld",
              prometheus::MetricType::Counter,
              {prometheus::ClientMetric{}}};
    out[0].metric[0].counter.value = static_cast<double>(c.made);
    out[1] = {"belay_slurm_controller_refusals_total",
              "slurmctld calls belayd did not make: over --slurm-rpc-budget or in a backoff",
              prometheus::MetricType::Counter,
              {prometheus::ClientMetric{}}};
    out[1].metric[0].counter.value = static_cast<double>(c.refused);
    return out;
  }

 private:
  const std::function<sched::ControllerCalls()> calls_;
};

// One per request: reports the status the server sends, and the time since the request came.
class LinkInterceptor final : public grpc::experimental::Interceptor {
 public:
  LinkInterceptor(DaemonMetrics& metrics, const char* method)
      : metrics_(metrics), method_(method == nullptr ? "" : method), start_(Clock::now()) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_STATUS)) {
      metrics_.WorkerLinkRequest(method_, methods->GetSendStatus().error_code(),
                                 SecondsSince(start_));
    }
    methods->Proceed();
  }

 private:
  DaemonMetrics& metrics_;
  const std::string method_;
  const Clock::time_point start_;
};

class LinkInterceptorFactory final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit LinkInterceptorFactory(DaemonMetrics& metrics) : metrics_(metrics) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new LinkInterceptor(metrics_, info->method());
  }

 private:
  DaemonMetrics& metrics_;
};

}  // namespace

std::string CodeName(grpc::StatusCode code) {
  // gRPC's codes are the canonical ones absl::StatusCode numbers the same way.
  std::string name = absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
  return name.empty() ? "UNKNOWN" : name;
}

DaemonMetrics::DaemonMetrics(std::vector<std::string> worker_link_methods,
                             std::function<sched::ControllerCalls()> controller_calls)
    : registry_(std::make_shared<prometheus::Registry>()),
      link_requests_(prometheus::BuildCounter()
                         .Name("belay_worker_link_requests_total")
                         .Help("Worker link requests answered, by method and gRPC status code")
                         .Register(*registry_)),
      link_latency_(prometheus::BuildHistogram()
                        .Name("belay_worker_link_request_duration_seconds")
                        .Help("Time from a worker link request's arrival to its answer")
                        .Register(*registry_)),
      store_writes_(prometheus::BuildHistogram()
                        .Name("belay_store_write_duration_seconds")
                        .Help("Time of one store write (an atomic batch), by durability")
                        .Register(*registry_)),
      synced_writes_(store_writes_.Add({{"durability", "synced"}}, kWriteBuckets)),
      buffered_writes_(store_writes_.Add({{"durability", "buffered"}}, kWriteBuckets)),
      rounds_(prometheus::BuildHistogram()
                  .Name("belay_supervisor_round_duration_seconds")
                  .Help("Time of one supervision round over every campaign")
                  .Register(*registry_)
                  .Add({}, kRoundBuckets)),
      controller_calls_(std::make_shared<ControllerCallsCollector>(std::move(controller_calls))) {
  worker_link_methods.push_back("unknown");
  for (const std::string& m : worker_link_methods)
    link_latency_by_method_[m] = &link_latency_.Add({{"method", m}}, kLinkBuckets);
}

void DaemonMetrics::WorkerLinkRequest(std::string_view method, grpc::StatusCode code,
                                      double seconds) {
  if (const size_t slash = method.rfind('/'); slash != std::string_view::npos)
    method.remove_prefix(slash + 1);
  auto it = link_latency_by_method_.find(method);
  if (it == link_latency_by_method_.end()) it = link_latency_by_method_.find("unknown");
  it->second->Observe(seconds);
  link_requests_.Add({{"method", it->first}, {"code", CodeName(code)}}).Increment();
}

void DaemonMetrics::StoreWrite(store::Durability durability, double seconds) {
  (durability == store::Durability::kSynced ? synced_writes_ : buffered_writes_).Observe(seconds);
}

void DaemonMetrics::SupervisorRound(double seconds) { rounds_.Observe(seconds); }

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
DaemonMetrics::WorkerLinkInterceptors() {
  return std::make_unique<LinkInterceptorFactory>(*this);
}

absl::Status TimedStore::Write(const store::WriteBatch& batch, store::Durability durability) {
  const Clock::time_point start = Clock::now();
  absl::Status s = inner_.Write(batch, durability);
  metrics_.StoreWrite(durability, SecondsSince(start));
  return s;
}

}  // namespace belay::metrics
