// Reading samples out of collected families, for the metrics tests.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "prometheus/metric_family.h"

namespace belay::metrics::testing {

// The value of the sample of family `name` whose labels include `labels` (counter, gauge or
// a histogram's count), or nullopt when there is none. More than one match is a test error.
inline std::optional<double> Sample(const std::vector<prometheus::MetricFamily>& families,
                                    const std::string& name,
                                    const std::map<std::string, std::string>& labels = {}) {
  std::optional<double> found;
  for (const prometheus::MetricFamily& f : families) {
    if (f.name != name) continue;
    for (const prometheus::ClientMetric& m : f.metric) {
      size_t matched = 0;
      for (const prometheus::ClientMetric::Label& l : m.label) {
        auto it = labels.find(l.name);
        if (it != labels.end() && it->second == l.value) ++matched;
      }
      if (matched != labels.size()) continue;
      if (found) return std::nullopt;  // ambiguous: the caller named too few labels
      switch (f.type) {
        case prometheus::MetricType::Counter:
          found = m.counter.value;
          break;
        case prometheus::MetricType::Histogram:
          found = static_cast<double>(m.histogram.sample_count);
          break;
        default:
          found = m.gauge.value;
      }
    }
  }
  return found;
}

// How many samples family `name` has.
inline size_t SampleCount(const std::vector<prometheus::MetricFamily>& families,
                          const std::string& name) {
  for (const prometheus::MetricFamily& f : families) {
    if (f.name == name) return f.metric.size();
  }
  return 0;
}

}  // namespace belay::metrics::testing
