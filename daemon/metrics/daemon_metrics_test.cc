// DaemonMetrics: worker link requests by method and code with a bounded method label, timed
// store writes, supervision rounds and the Slurm backend's call counts.
#include "daemon/metrics/daemon_metrics.h"

#include "daemon/metrics/metrics_testing.h"
#include "daemon/store/memory_store.h"
#include "gtest/gtest.h"

namespace belay::metrics {
namespace {

using testing::Sample;

std::vector<prometheus::MetricFamily> CollectAll(const DaemonMetrics& m) {
  std::vector<prometheus::MetricFamily> out;
  for (const auto& c : m.collectables()) {
    for (prometheus::MetricFamily& f : c->Collect()) out.push_back(std::move(f));
  }
  return out;
}

TEST(DaemonMetrics, WorkerLinkRequestsAreCountedByMethodAndCode) {
  DaemonMetrics m({"Register", "ReportSteps"}, nullptr);
  m.WorkerLinkRequest("/belay.v1.WorkerLink/ReportSteps", grpc::StatusCode::OK, 0.002);
  m.WorkerLinkRequest("/belay.v1.WorkerLink/ReportSteps", grpc::StatusCode::OK, 0.004);
  m.WorkerLinkRequest("/belay.v1.WorkerLink/Register", grpc::StatusCode::UNAUTHENTICATED, 0.001);
  const auto f = CollectAll(m);
  EXPECT_EQ(
      Sample(f, "belay_worker_link_requests_total", {{"method", "ReportSteps"}, {"code", "OK"}}),
      2);
  EXPECT_EQ(Sample(f, "belay_worker_link_requests_total",
                   {{"method", "Register"}, {"code", "UNAUTHENTICATED"}}),
            1);
  EXPECT_EQ(Sample(f, "belay_worker_link_request_duration_seconds", {{"method", "ReportSteps"}}),
            2);
}

TEST(DaemonMetrics, MethodsItDoesNotKnowShareOneLabel) {
  DaemonMetrics m({"Register"}, nullptr);
  for (int i = 0; i < 50; ++i)
    m.WorkerLinkRequest("/x.Y/Made" + std::to_string(i), grpc::StatusCode::UNIMPLEMENTED, 0);
  const auto f = CollectAll(m);
  EXPECT_EQ(Sample(f, "belay_worker_link_requests_total",
                   {{"method", "unknown"}, {"code", "UNIMPLEMENTED"}}),
            50);
  EXPECT_EQ(testing::SampleCount(f, "belay_worker_link_requests_total"), 1u);
}

TEST(DaemonMetrics, StoreWritesAreTimedByDurability) {
  DaemonMetrics m({}, nullptr);
  store::MemoryStore inner;
  TimedStore timed(inner, m);
  store::WriteBatch b;
  b.Put(store::Table::kMeta, "k", "v");
  ASSERT_TRUE(timed.Write(b, store::Durability::kSynced).ok());
  ASSERT_TRUE(timed.Write(b, store::Durability::kBuffered).ok());
  ASSERT_TRUE(timed.Write(b, store::Durability::kBuffered).ok());
  EXPECT_EQ(timed.Get(store::Table::kMeta, "k").value(), "v");
  const auto f = CollectAll(m);
  EXPECT_EQ(Sample(f, "belay_store_write_duration_seconds", {{"durability", "synced"}}), 1);
  EXPECT_EQ(Sample(f, "belay_store_write_duration_seconds", {{"durability", "buffered"}}), 2);
}

TEST(DaemonMetrics, RoundsAndSlurmCallsAreExported) {
  DaemonMetrics m({}, [] { return sched::ControllerCalls{.made = 7, .refused = 2}; });
  m.SupervisorRound(0.01);
  const auto f = CollectAll(m);
  EXPECT_EQ(Sample(f, "belay_supervisor_round_duration_seconds"), 1);
  EXPECT_EQ(Sample(f, "belay_slurm_controller_calls_total"), 7);
  EXPECT_EQ(Sample(f, "belay_slurm_controller_refusals_total"), 2);
}

TEST(DaemonMetrics, CodeNamesAreTheCanonicalOnes) {
  EXPECT_EQ(CodeName(grpc::StatusCode::OK), "OK");
  EXPECT_EQ(CodeName(grpc::StatusCode::RESOURCE_EXHAUSTED), "RESOURCE_EXHAUSTED");
  EXPECT_EQ(CodeName(grpc::StatusCode::UNAUTHENTICATED), "UNAUTHENTICATED");
  EXPECT_EQ(CodeName(static_cast<grpc::StatusCode>(99)), "UNKNOWN");
}

}  // namespace
}  // namespace belay::metrics
