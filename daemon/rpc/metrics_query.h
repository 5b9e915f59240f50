// QueryMetrics' work, bounded whatever the campaign's length: the loss series downsampled
// while the step records are read in pages, and the raw records one byte-budgeted page at a
// time.
#pragma once

#include <cstddef>

#include "absl/status/status.h"
#include "belay/v1/coordinator.pb.h"
#include "daemon/store/store.h"

namespace belay::rpc {

struct MetricsQueryLimits {
  int max_points = 2000;               // per series, whatever the request asks
  size_t raw_bytes = size_t{4} << 20;  // raw records in one response (at least one record)
  size_t scan_page = 1024;             // step records read from the store at a time
};

// Fills `resp` for `req` over campaign `campaign` (already checked to be the caller's):
// series of at most limits.max_points points (the step range in equal buckets: mean, min,
// max), and with include_raw the raw step and eval records from first_step up to
// limits.raw_bytes (resp->more, resp->next_first_step for the rest). Memory and response
// size do not grow with the number of steps.
absl::Status QueryMetrics(const store::Store& store, const v1::Campaign& campaign,
                          const v1::QueryMetricsRequest& req, v1::QueryMetricsResponse* resp,
                          const MetricsQueryLimits& limits = {});

}  // namespace belay::rpc
