// Duration parsing and formatting for campaign files and Slurm time limits.
#include "common/duration.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <optional>

#include "absl/strings/str_format.h"
#include "common/strings.h"

namespace belay {
namespace {

constexpr int64_t kMaxSeconds = int64_t{365} * 24 * 3600;
constexpr char kForms[] =
    "expected a duration such as \"90s\", \"30m\", \"1h30m\", \"2d\" or \"[D-]HH:MM:SS\"";

// Reads decimal digits at text[*pos...]; nullopt if there are none. Values past kMaxSeconds
// are clamped to kMaxSeconds + 1 so that huge numbers read as out of range, not malformed.
std::optional<int64_t> ReadNumber(std::string_view text, size_t* pos) {
  int64_t value = 0;
  size_t start = *pos;
  while (*pos < text.size() && text[*pos] >= '0' && text[*pos] <= '9') {
    value = std::min(value * 10 + (text[*pos] - '0'), kMaxSeconds + 1);
    ++*pos;
  }
  if (*pos == start) return std::nullopt;
  return value;
}

absl::StatusOr<int64_t> ParseUnits(std::string_view text) {
  constexpr std::array<std::pair<char, int64_t>, 4> kUnits = {
      {{'d', 86400}, {'h', 3600}, {'m', 60}, {'s', 1}}};
  size_t pos = 0;
  size_t next_unit = 0;
  int64_t total = 0;
  while (pos < text.size()) {
    std::optional<int64_t> n = ReadNumber(text, &pos);
    if (!n || pos >= text.size()) return absl::InvalidArgumentError(kForms);
    char unit = text[pos++];
    size_t u = next_unit;
    while (u < kUnits.size() && kUnits[u].first != unit) ++u;
    if (u == kUnits.size()) return absl::InvalidArgumentError(kForms);
    next_unit = u + 1;
    if (*n > kMaxSeconds) return absl::OutOfRangeError("longer than 365 days");
    total += *n * kUnits[u].second;
    if (total > kMaxSeconds) return absl::OutOfRangeError("longer than 365 days");
  }
  return total;
}

absl::StatusOr<int64_t> ParseClock(std::string_view text) {
  size_t pos = 0;
  int64_t days = 0;
  if (size_t dash = text.find('-'); dash != std::string_view::npos) {
    std::optional<int64_t> d = ReadNumber(text, &pos);
    if (!d || pos != dash) return absl::InvalidArgumentError(kForms);
    days = *d;
    ++pos;
  }
  std::array<int64_t, 3> hms{};
  for (size_t i = 0; i < 3; ++i) {
    if (i > 0) {
      if (pos >= text.size() || text[pos] != ':') return absl::InvalidArgumentError(kForms);
      ++pos;
    }
    size_t start = pos;
    std::optional<int64_t> n = ReadNumber(text, &pos);
    if (!n || (i > 0 && pos - start != 2)) return absl::InvalidArgumentError(kForms);
    hms[i] = *n;
  }
  if (pos != text.size() || hms[1] >= 60 || hms[2] >= 60) {
    return absl::InvalidArgumentError(kForms);
  }
  int64_t total = days * 86400 + hms[0] * 3600 + hms[1] * 60 + hms[2];
  if (total > kMaxSeconds) return absl::OutOfRangeError("longer than 365 days");
  return total;
}

}  // namespace

absl::StatusOr<std::chrono::seconds> ParseDuration(std::string_view text) {
  if (text.empty()) return absl::InvalidArgumentError(kForms);
  absl::StatusOr<int64_t> s =
      text.find(':') != std::string_view::npos ? ParseClock(text) : ParseUnits(text);
  if (!s.ok()) return s.status();
  return std::chrono::seconds(*s);
}

std::string FormatDuration(std::chrono::seconds d) {
  int64_t s = d.count();
  if (s <= 0) return "0s";
  std::string out;
  for (auto [unit, size] : {std::pair{'d', int64_t{86400}}, std::pair{'h', int64_t{3600}},
                            std::pair{'m', int64_t{60}}, std::pair{'s', int64_t{1}}}) {
    if (s >= size) {
      out += Cat(s / size, unit);
      s %= size;
    }
  }
  return out;
}

std::string FormatSlurmTime(std::chrono::seconds d) {
  int64_t s = d.count() < 0 ? 0 : d.count();
  return absl::StrFormat("%d-%02d:%02d:%02d", s / 86400, (s / 3600) % 24, (s / 60) % 60, s % 60);
}

}  // namespace belay
