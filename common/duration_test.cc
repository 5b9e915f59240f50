// ParseDuration, FormatDuration and FormatSlurmTime: accepted forms, rejections, round trips.
#include "common/duration.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace belay {
namespace {

using std::chrono::seconds;

constexpr int64_t kDay = 86400;
constexpr int64_t kMaxSeconds = 365 * kDay;

// The parsed value, or -1 (never a valid duration) with the status printed on failure.
int64_t ParsedSeconds(std::string_view text) {
  absl::StatusOr<seconds> d = ParseDuration(text);
  EXPECT_TRUE(d.ok()) << "\"" << text << "\": " << std::string(d.status().message());
  return d.ok() ? d->count() : -1;
}

absl::StatusCode ParseCode(std::string_view text) { return ParseDuration(text).status().code(); }

TEST(ParseDuration, AcceptsUnitGroupsLargestFirst) {
  EXPECT_EQ(ParsedSeconds("45s"), 45);
  EXPECT_EQ(ParsedSeconds("30m"), 30 * 60);
  EXPECT_EQ(ParsedSeconds("1h30m"), 5400);
  EXPECT_EQ(ParsedSeconds("2d12h"), 2 * kDay + 12 * 3600);
  EXPECT_EQ(ParsedSeconds("1d1h1m1s"), kDay + 3600 + 60 + 1);
  EXPECT_EQ(ParsedSeconds("0s"), 0);
}

TEST(ParseDuration, AcceptsGroupsThatSkipUnitsOrExceedTheNextUnit) {
  EXPECT_EQ(ParsedSeconds("1d30s"), kDay + 30);
  EXPECT_EQ(ParsedSeconds("90s"), 90);
  EXPECT_EQ(ParsedSeconds("36h"), 36 * 3600);
  EXPECT_EQ(ParsedSeconds("007m"), 7 * 60);
}

TEST(ParseDuration, AcceptsSlurmClockForms) {
  EXPECT_EQ(ParsedSeconds("12:00:00"), 12 * 3600);
  EXPECT_EQ(ParsedSeconds("1-00:00:00"), kDay);
  EXPECT_EQ(ParsedSeconds("00:05:00"), 300);
  EXPECT_EQ(ParsedSeconds("2-03:04:05"), 2 * kDay + 3 * 3600 + 4 * 60 + 5);
  EXPECT_EQ(ParsedSeconds("0:00:59"), 59);
  // Only minutes and seconds are held to two digits; hours may run past 23 without a day field.
  EXPECT_EQ(ParsedSeconds("100:00:00"), 100 * 3600);
}

TEST(ParseDuration, RejectsMalformedTextAsInvalidArgument) {
  for (std::string_view text : {"", "5", "m", "1x", "1m1h", "1h1h", "1s1s", "-5m", " 5m", "5m ",
                                "5 m", "1.5h", "5M", "h5", "1h30", "1-", "+5m"}) {
    EXPECT_EQ(ParseCode(text), absl::StatusCode::kInvalidArgument) << "\"" << text << "\"";
  }
}

TEST(ParseDuration, RejectsMalformedClocksAsInvalidArgument) {
  for (std::string_view text :
       {"12:60:00", "12:00:60", "1:2:3", "12:0:00", "12:00:0", "12:000:00", "12:00", "12:00:00:00",
        ":00:00", "12:00:00 ", "-1-00:00:00", "1-2-00:00:00", "a-00:00:00", "1d-00:00:00",
        "12:00:0x", "-12:00:00"}) {
    EXPECT_EQ(ParseCode(text), absl::StatusCode::kInvalidArgument) << "\"" << text << "\"";
  }
}

TEST(ParseDuration, InvalidArgumentNamesTheAcceptedForms) {
  absl::StatusOr<seconds> d = ParseDuration("soon");
  ASSERT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(d.status().message()).find("1h30m"), std::string::npos)
      << std::string(d.status().message());
}

TEST(ParseDuration, AcceptsExactly365Days) {
  EXPECT_EQ(ParsedSeconds("365d"), kMaxSeconds);
  EXPECT_EQ(ParsedSeconds("364d24h"), kMaxSeconds);
  EXPECT_EQ(ParsedSeconds("8760h"), kMaxSeconds);
  EXPECT_EQ(ParsedSeconds("31536000s"), kMaxSeconds);
  EXPECT_EQ(ParsedSeconds("365-00:00:00"), kMaxSeconds);
  EXPECT_EQ(ParsedSeconds("8760:00:00"), kMaxSeconds);
}

TEST(ParseDuration, RejectsPast365DaysAsOutOfRange) {
  for (std::string_view text :
       {"366d", "365d1s", "8761h", "31536001s", "40000000s", "364d24h1s", "366-00:00:00",
        "365-00:00:01", "8760:00:01", "9000:00:00", "1-8760:00:00"}) {
    EXPECT_EQ(ParseCode(text), absl::StatusCode::kOutOfRange) << "\"" << text << "\"";
  }
}

TEST(ParseDuration, ReportsNumbersPastInt64AsOutOfRangeNotWrapped) {
  for (std::string_view text :
       {"99999999999999999999s", "9223372036854775808s", "18446744073709551617d",
        "1d99999999999999999999s", "99999999999999999999:00:00", "99999999999999999999-00:00:00"}) {
    EXPECT_EQ(ParseCode(text), absl::StatusCode::kOutOfRange) << "\"" << text << "\"";
  }
  // Seconds of a clock must be below 60 whatever their size: malformed, not long.
  EXPECT_EQ(ParseCode("00:00:99999999999999999999"), absl::StatusCode::kInvalidArgument);
}

TEST(FormatDuration, WritesLargestUnitsFirstAndOmitsZeroUnits) {
  EXPECT_EQ(FormatDuration(seconds(0)), "0s");
  EXPECT_EQ(FormatDuration(seconds(45)), "45s");
  EXPECT_EQ(FormatDuration(seconds(90)), "1m30s");
  EXPECT_EQ(FormatDuration(seconds(5400)), "1h30m");
  EXPECT_EQ(FormatDuration(seconds(kDay)), "1d");
  EXPECT_EQ(FormatDuration(seconds(kDay + 1)), "1d1s");
  EXPECT_EQ(FormatDuration(seconds(2 * kDay + 12 * 3600)), "2d12h");
  EXPECT_EQ(FormatDuration(seconds(kMaxSeconds)), "365d");
}

TEST(FormatDuration, WritesNegativeDurationsAsZero) {
  EXPECT_EQ(FormatDuration(seconds(-1)), "0s");
  EXPECT_EQ(FormatDuration(seconds(-kDay)), "0s");
}

TEST(FormatDuration, RoundTripsThroughParseDuration) {
  for (int64_t s : {int64_t{0}, int64_t{1}, int64_t{59}, int64_t{60}, int64_t{61}, int64_t{3599},
                    int64_t{3600}, int64_t{5400}, kDay - 1, kDay, kDay + 3661, int64_t{1234567},
                    kMaxSeconds - 1, kMaxSeconds}) {
    std::string text = FormatDuration(seconds(s));
    EXPECT_EQ(ParsedSeconds(text), s) << text;
  }
}

TEST(FormatSlurmTime, WritesDaysDashHoursMinutesSeconds) {
  EXPECT_EQ(FormatSlurmTime(seconds(0)), "0-00:00:00");
  EXPECT_EQ(FormatSlurmTime(seconds(12 * 3600)), "0-12:00:00");
  EXPECT_EQ(FormatSlurmTime(seconds(2 * kDay + 1)), "2-00:00:01");
  EXPECT_EQ(FormatSlurmTime(seconds(kDay - 1)), "0-23:59:59");
  EXPECT_EQ(FormatSlurmTime(seconds(3 * kDay + 4 * 3600 + 5 * 60 + 6)), "3-04:05:06");
  EXPECT_EQ(FormatSlurmTime(seconds(kMaxSeconds)), "365-00:00:00");
}

TEST(FormatSlurmTime, WritesNegativeDurationsAsZero) {
  EXPECT_EQ(FormatSlurmTime(seconds(-5)), "0-00:00:00");
}

TEST(FormatSlurmTime, RoundTripsThroughParseDuration) {
  for (int64_t s : {int64_t{0}, int64_t{59}, int64_t{3600}, kDay - 1, kDay, 2 * kDay + 1,
                    int64_t{1234567}, kMaxSeconds}) {
    std::string text = FormatSlurmTime(seconds(s));
    EXPECT_EQ(ParsedSeconds(text), s) << text;
  }
}

}  // namespace
}  // namespace belay
