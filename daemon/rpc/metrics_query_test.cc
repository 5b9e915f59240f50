// QueryMetrics over a long campaign: series capped at the server's points, raw records paged.
#include "daemon/rpc/metrics_query.h"

#include "daemon/store/memory_store.h"
#include "daemon/store/records.h"
#include "gtest/gtest.h"

namespace belay::rpc {
namespace {

class MetricsQueryTest : public ::testing::Test {
 protected:
  // A campaign with steps 1..n (loss = step) and an evaluation every 100 steps.
  void SetUp() override {
    campaign_.set_id("long-1");
    campaign_.set_current_step(kSteps);
    store::WriteBatch b;
    for (int64_t step = 1; step <= kSteps; ++step) {
      v1::StepMetrics m;
      m.set_step(step);
      m.set_loss(static_cast<double>(step));
      m.set_attempt_number(1);
      store::Put(b, campaign_.id(), m);
      if (step % 100 == 0) {
        v1::EvalMetrics e;
        e.set_step(step);
        e.set_dataset("val");
        e.set_loss(1.0);
        store::Put(b, campaign_.id(), e);
      }
    }
    ASSERT_TRUE(store_.Write(b, store::Durability::kBuffered).ok());
  }
  static constexpr int64_t kSteps = 10000;
  store::MemoryStore store_;
  v1::Campaign campaign_;
};

TEST_F(MetricsQueryTest, SeriesHaveAtMostTheServersPointsWhateverTheRequestAsks) {
  for (int32_t asked : {0, 5000, 1 << 30}) {
    v1::QueryMetricsRequest req;
    req.set_max_points(asked);
    v1::QueryMetricsResponse resp;
    ASSERT_TRUE(QueryMetrics(store_, campaign_, req, &resp).ok());
    ASSERT_EQ(resp.series_size(), 2);
    const v1::MetricSeriesData& loss = resp.series(0);
    EXPECT_EQ(loss.steps_size(), 2000) << asked;
    EXPECT_EQ(loss.steps(loss.steps_size() - 1), kSteps);
    EXPECT_DOUBLE_EQ(loss.values(0), 3.0) << "the mean of steps 1-5";
    EXPECT_DOUBLE_EQ(loss.min_values(0), 1.0);
    EXPECT_DOUBLE_EQ(loss.max_values(0), 5.0);
    EXPECT_EQ(resp.steps_size(), 0) << "no raw records unless asked";
  }
  v1::QueryMetricsRequest few;
  few.set_max_points(100);
  few.set_first_step(101);
  few.set_last_step(200);
  v1::QueryMetricsResponse resp;
  ASSERT_TRUE(QueryMetrics(store_, campaign_, few, &resp).ok());
  EXPECT_EQ(resp.series(0).steps_size(), 100) << "a range within the cap: every step";
  EXPECT_EQ(resp.series(0).steps(0), 101);
  EXPECT_EQ(resp.series(1).steps_size(), 1) << "the evaluation at step 200; 100 is outside";
}

TEST_F(MetricsQueryTest, RawRecordsComeInPagesThatTogetherHoldEveryStepOnce) {
  MetricsQueryLimits limits;
  limits.raw_bytes = 8 << 10;
  limits.scan_page = 300;
  v1::QueryMetricsRequest req;
  req.set_include_raw(true);
  int64_t expect = 1;
  int evals = 0, pages = 0;
  for (bool more = true; more; ++pages) {
    v1::QueryMetricsResponse resp;
    ASSERT_TRUE(QueryMetrics(store_, campaign_, req, &resp, limits).ok());
    EXPECT_LE(resp.ByteSizeLong(), limits.raw_bytes + (128u << 10))
        << "bounded by the budget plus the series";
    for (const v1::StepMetrics& m : resp.steps()) EXPECT_EQ(m.step(), expect++);
    evals += resp.evals_size();
    more = resp.more();
    if (more) {
      EXPECT_EQ(resp.next_first_step(), expect);
    }
    req.set_first_step(resp.next_first_step());
    req.set_raw_only(true);
    if (pages > 0) {
      EXPECT_EQ(resp.series_size(), 0) << "later pages: raw records only";
    }
  }
  EXPECT_EQ(expect, kSteps + 1);
  EXPECT_EQ(evals, kSteps / 100) << "each evaluation on the page of its step";
  EXPECT_GT(pages, 10);
}

}  // namespace
}  // namespace belay::rpc
