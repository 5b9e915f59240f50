// QueryMetrics: series aggregated in one pass over pages of step records; raw records paged.
#include "daemon/rpc/metrics_query.h"

#include <algorithm>
#include <limits>
#include <optional>

#include "daemon/store/records.h"

namespace belay::rpc {
namespace {

// Points of one series, each the mean, min and max of the values in one bucket of steps.
class Buckets {
 public:
  Buckets(int64_t first, int64_t width, v1::MetricSeriesData* out)
      : first_(first), width_(width), out_(out) {}
  void Add(int64_t step, double v) {
    const int64_t bucket = (step - first_) / width_;
    if (n_ > 0 && bucket != bucket_) Flush();
    bucket_ = bucket;
    last_step_ = step;
    sum_ += v;
    min_ = std::min(min_, v);
    max_ = std::max(max_, v);
    ++n_;
  }
  void Flush() {
    if (n_ == 0) return;
    out_->add_steps(last_step_);
    out_->add_values(sum_ / static_cast<double>(n_));
    out_->add_min_values(min_);
    out_->add_max_values(max_);
    n_ = 0;
    sum_ = 0;
    min_ = std::numeric_limits<double>::infinity();
    max_ = -std::numeric_limits<double>::infinity();
  }

 private:
  int64_t first_, width_;
  v1::MetricSeriesData* out_;
  int64_t bucket_ = 0, last_step_ = 0, n_ = 0;
  double sum_ = 0, min_ = std::numeric_limits<double>::infinity(),
         max_ = -std::numeric_limits<double>::infinity();
};

// The first (or with `latest` the last) step with a record in [first, end).
absl::StatusOr<std::optional<int64_t>> EdgeStep(const store::Store& store, const std::string& id,
                                                int64_t first, int64_t end, bool latest) {
  absl::StatusOr<std::vector<v1::StepMetrics>> one =
      store::ListStepMetrics(store, id, first, end, 1, latest);
  if (!one.ok()) return one.status();
  if (one->empty()) return std::optional<int64_t>();
  return std::optional<int64_t>(one->front().step());
}

}  // namespace

absl::Status QueryMetrics(const store::Store& store, const v1::Campaign& c,
                          const v1::QueryMetricsRequest& req, v1::QueryMetricsResponse* resp,
                          const MetricsQueryLimits& limits) {
  const int64_t first = std::max<int64_t>(req.first_step(), 0);
  // Exclusive; -1: no bound (also for the largest step, which has no successor).
  const int64_t end = req.last_step() > 0 && req.last_step() < std::numeric_limits<int64_t>::max()
                          ? req.last_step() + 1
                          : -1;
  absl::StatusOr<std::vector<v1::EvalMetrics>> evals = store::ListEvalMetrics(store, c.id());
  if (!evals.ok()) return evals.status();
  auto in_range = [&](int64_t step) { return step >= first && (end < 0 || step < end); };
  resp->set_latest_step(c.current_step());

  if (!req.raw_only()) {
    absl::StatusOr<std::optional<int64_t>> lo = EdgeStep(store, c.id(), first, end, false);
    if (!lo.ok()) return lo.status();
    absl::StatusOr<std::optional<int64_t>> hi = EdgeStep(store, c.id(), first, end, true);
    if (!hi.ok()) return hi.status();
    v1::MetricSeriesData* loss = resp->add_series();
    loss->set_series(v1::METRIC_SERIES_LOSS);
    v1::MetricSeriesData* val = resp->add_series();
    val->set_series(v1::METRIC_SERIES_VAL_LOSS);
    if (lo->has_value() && hi->has_value()) {
      const int64_t points =
          req.max_points() > 0 ? std::min(req.max_points(), limits.max_points) : limits.max_points;
      const int64_t span = **hi - **lo + 1;
      const int64_t width = (span + points - 1) / points;
      Buckets train(**lo, width, loss);
      for (int64_t from = **lo;;) {
        absl::StatusOr<std::vector<v1::StepMetrics>> page =
            store::ListStepMetrics(store, c.id(), from, end, limits.scan_page);
        if (!page.ok()) return page.status();
        for (const v1::StepMetrics& m : *page) train.Add(m.step(), m.loss());
        if (page->size() < limits.scan_page) break;
        from = page->back().step() + 1;
      }
      train.Flush();
      Buckets validation(**lo, width, val);
      for (const v1::EvalMetrics& e : *evals) {
        if (in_range(e.step()) && e.step() >= **lo) validation.Add(e.step(), e.loss());
      }
      validation.Flush();
    }
  }

  if (req.include_raw() || req.raw_only()) {
    size_t bytes = 0;
    int64_t raw_end = end;  // the evals returned are those of the steps this page covers
    for (int64_t from = first;;) {
      absl::StatusOr<std::vector<v1::StepMetrics>> page =
          store::ListStepMetrics(store, c.id(), from, end, limits.scan_page);
      if (!page.ok()) return page.status();
      if (page->empty()) break;
      const int64_t after = page->back().step() + 1;  // before the records are moved out
      for (v1::StepMetrics& m : *page) {
        const size_t size = m.ByteSizeLong();
        if (resp->steps_size() > 0 && bytes + size > limits.raw_bytes) {
          resp->set_more(true);
          resp->set_next_first_step(m.step());
          raw_end = m.step();
          break;
        }
        bytes += size;
        *resp->add_steps() = std::move(m);
      }
      if (resp->more() || page->size() < limits.scan_page) break;
      from = after;
    }
    for (const v1::EvalMetrics& e : *evals) {
      if (e.step() >= first && (raw_end < 0 || e.step() < raw_end)) *resp->add_evals() = e;
    }
  }
  return absl::OkStatus();
}

}  // namespace belay::rpc
