// Per-rank time summaries of step reports.
#include "daemon/supervisor/rank_times.h"

#include <algorithm>
#include <vector>

namespace belay::supervisor {

namespace pb = ::belay::v1;

pb::RankTimeSummary SummarizeRankTimes(const google::protobuf::RepeatedField<double>& times) {
  pb::RankTimeSummary s;
  const int n = times.size();
  s.set_ranks(n);
  if (n == 0) return s;
  // One pass for the extremes and the slowest ranks (a short list kept sorted, slowest first,
  // the lower rank first among equal times), then the median of a copy: O(n) for the
  // 100,000 values of a large attempt's report.
  std::vector<std::pair<double, int>> slowest;
  const size_t k = static_cast<size_t>(std::min(n, kSummarySlowest));
  double lo = times.Get(0), hi = times.Get(0);
  for (int r = 0; r < n; ++r) {
    const double t = times.Get(r);
    lo = std::min(lo, t);
    hi = std::max(hi, t);
    if (slowest.size() == k && t <= slowest.back().first) continue;
    auto at =
        std::find_if(slowest.begin(), slowest.end(), [&](const auto& e) { return t > e.first; });
    slowest.insert(at, {t, r});
    if (slowest.size() > k) slowest.pop_back();
  }
  for (const auto& [t, r] : slowest) {
    pb::RankTime* e = s.add_slowest();
    e->set_rank(r);
    e->set_time_s(t);
  }
  std::vector<double> sorted(times.begin(), times.end());
  const auto mid = sorted.begin() + n / 2;
  std::nth_element(sorted.begin(), mid, sorted.end());
  s.set_median_s(*mid);
  s.set_min_s(lo);
  s.set_max_s(hi);
  return s;
}

pb::StepMetrics StoredStepRecord(const pb::StepMetrics& m) {
  pb::StepMetrics out = m;
  out.clear_rank_step_time_s();
  out.clear_rank_compute_time_s();
  if (m.rank_step_time_s_size() > 0)
    *out.mutable_rank_step_summary() = SummarizeRankTimes(m.rank_step_time_s());
  if (m.rank_compute_time_s_size() > 0)
    *out.mutable_rank_compute_summary() = SummarizeRankTimes(m.rank_compute_time_s());
  return out;
}

}  // namespace belay::supervisor
