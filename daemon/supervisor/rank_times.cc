// Per-rank time summaries of step reports.
#include "daemon/supervisor/rank_times.h"

#include <algorithm>
#include <numeric>
#include <vector>

namespace belay::supervisor {

namespace pb = ::belay::v1;

pb::RankTimeSummary SummarizeRankTimes(const google::protobuf::RepeatedField<double>& times) {
  pb::RankTimeSummary s;
  const int n = times.size();
  s.set_ranks(n);
  if (n == 0) return s;
  std::vector<int> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  auto slower = [&](int a, int b) { return times.Get(a) > times.Get(b) || (times.Get(a) == times.Get(b) && a < b); };
  const int k = std::min(n, kSummarySlowest);
  std::partial_sort(order.begin(), order.begin() + k, order.end(), slower);
  for (int i = 0; i < k; ++i) {
    pb::RankTime* t = s.add_slowest();
    t->set_rank(order[static_cast<size_t>(i)]);
    t->set_time_s(times.Get(order[static_cast<size_t>(i)]));
  }
  std::vector<double> sorted(times.begin(), times.end());
  const auto mid = sorted.begin() + n / 2;
  std::nth_element(sorted.begin(), mid, sorted.end());
  s.set_median_s(*mid);
  const auto [lo, hi] = std::minmax_element(times.begin(), times.end());
  s.set_min_s(*lo);
  s.set_max_s(*hi);
  return s;
}

pb::StepMetrics StoredStepRecord(const pb::StepMetrics& m) {
  pb::StepMetrics out = m;
  out.clear_rank_step_time_s();
  out.clear_rank_compute_time_s();
  if (m.rank_step_time_s_size() > 0) *out.mutable_rank_step_summary() = SummarizeRankTimes(m.rank_step_time_s());
  if (m.rank_compute_time_s_size() > 0) *out.mutable_rank_compute_summary() = SummarizeRankTimes(m.rank_compute_time_s());
  return out;
}

}  // namespace belay::supervisor
