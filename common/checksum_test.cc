// xxh3-64 of buffers and files against reference sums, and the 16-hex-digit manifest form.
#include "common/checksum.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>
#include <string_view>
#include <system_error>

namespace belay {
namespace {

namespace fs = std::filesystem;

// Reference sums from `xxhsum -H3` (xxHash 0.8.1), computed outside this code base.
constexpr uint64_t kEmptySum = 0x2d06800538d394c2;
constexpr uint64_t kASum = 0xe6c632b61e964e1f;
constexpr uint64_t kAbcSum = 0x78af5f94892f3950;
constexpr uint64_t kFoxSum = 0xce7d19a5418fb365;
constexpr uint64_t kFoxDotSum = 0xb614e0225d51db19;
constexpr std::string_view kFox = "The quick brown fox jumps over the lazy dog";
// 3 MiB + 17 bytes of Pattern() below: three full 1 MiB reads and a short tail.
constexpr size_t kLargeSize = 3 * 1024 * 1024 + 17;
constexpr uint64_t kLargeSum = 0xfb905cfca37d6431;

// Bytes that differ from their neighbours and from one 1 MiB block to the next; the same
// formula in Python, bytes((i * 31 + (i >> 10)) & 0xff for i in range(n)), gave kLargeSum.
std::string Pattern(size_t n) {
  std::string out(n, '\0');
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<char>((i * 31 + (i >> 10)) & 0xff);
  return out;
}

std::span<const std::byte> Bytes(std::string_view s) {
  return std::as_bytes(std::span<const char>(s.data(), s.size()));
}

// A fresh directory per test, removed with everything in it afterwards.
class Xxh3FileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::path(::testing::TempDir()) /
           (std::string("belay_checksum_") + info->name() + "_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    ASSERT_TRUE(fs::create_directories(dir_)) << dir_;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  fs::path Write(const std::string& name, std::string_view content) {
    fs::path p = dir_ / name;
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out.write(content.data(), static_cast<std::streamsize>(content.size()));
    out.close();
    EXPECT_TRUE(out.good()) << p;
    return p;
  }

  fs::path dir_;
};

TEST(Xxh3, MatchesReferenceSums) {
  EXPECT_EQ(Xxh3(std::string_view()), kEmptySum);
  EXPECT_EQ(Xxh3("a"), kASum);
  EXPECT_EQ(Xxh3("abc"), kAbcSum);
  EXPECT_EQ(Xxh3(kFox), kFoxSum);
  EXPECT_EQ(Xxh3(std::string(kFox) + "."), kFoxDotSum);
  EXPECT_EQ(Xxh3(Pattern(kLargeSize)), kLargeSum);
}

TEST(Xxh3, StringViewAndByteSpanOfSameBytesAgree) {
  std::string with_nul("a\0b\xff", 4);
  for (std::string_view s :
       {std::string_view(), std::string_view("abc"), kFox, std::string_view(with_nul)}) {
    EXPECT_EQ(Xxh3(s), Xxh3(Bytes(s))) << "\"" << s << "\"";
  }
  std::string large = Pattern(kLargeSize);
  EXPECT_EQ(Xxh3(Bytes(large)), kLargeSum);
}

TEST(Xxh3, HashesEmbeddedNulBytes) {
  // A string_view that stopped at the first NUL would hash "a" alone.
  EXPECT_NE(Xxh3(std::string_view("a\0b", 3)), kASum);
  EXPECT_NE(Xxh3(std::string_view("a\0", 2)), Xxh3(std::string_view("a", 1)));
}

TEST(Xxh3, FlippedByteChangesSum) {
  std::string data = Pattern(4096);
  uint64_t before = Xxh3(data);
  for (size_t at : {size_t{0}, size_t{1234}, data.size() - 1}) {
    std::string flipped = data;
    flipped[at] = static_cast<char>(flipped[at] ^ 0x01);
    EXPECT_NE(Xxh3(flipped), before) << "byte " << at;
  }
}

TEST_F(Xxh3FileTest, EqualsXxh3OfContent) {
  EXPECT_EQ(Xxh3File(Write("fox", kFox)).value(), kFoxSum);
  std::string small = Pattern(1000);
  EXPECT_EQ(Xxh3File(Write("small", small)).value(), Xxh3(small));
}

TEST_F(Xxh3FileTest, EmptyFileHashesAsEmptyInput) {
  absl::StatusOr<uint64_t> sum = Xxh3File(Write("empty", ""));
  ASSERT_TRUE(sum.ok()) << std::string(sum.status().message());
  EXPECT_EQ(*sum, kEmptySum);
}

TEST_F(Xxh3FileTest, FileLargerThanReadBufferEqualsXxh3OfContent) {
  std::string content = Pattern(kLargeSize);
  absl::StatusOr<uint64_t> sum = Xxh3File(Write("large", content));
  ASSERT_TRUE(sum.ok()) << std::string(sum.status().message());
  EXPECT_EQ(*sum, Xxh3(content));
  EXPECT_EQ(*sum, kLargeSum);
}

TEST_F(Xxh3FileTest, FileExactlyOneReadBufferEqualsXxh3OfContent) {
  std::string content = Pattern(1 << 20);
  absl::StatusOr<uint64_t> sum = Xxh3File(Write("one_mib", content));
  ASSERT_TRUE(sum.ok()) << std::string(sum.status().message());
  EXPECT_EQ(*sum, Xxh3(content));
}

TEST_F(Xxh3FileTest, FlippedByteInAnyReadChangesSum) {
  std::string content = Pattern(kLargeSize);
  // First byte, a byte either side of the first 1 MiB boundary, and the last byte of the tail.
  for (size_t at : {size_t{0}, size_t{(1 << 20) - 1}, size_t{1 << 20}, kLargeSize - 1}) {
    std::string flipped = content;
    flipped[at] = static_cast<char>(flipped[at] ^ 0x80);
    absl::StatusOr<uint64_t> sum = Xxh3File(Write("flipped", flipped));
    ASSERT_TRUE(sum.ok()) << std::string(sum.status().message());
    EXPECT_NE(*sum, kLargeSum) << "byte " << at;
    EXPECT_EQ(*sum, Xxh3(flipped)) << "byte " << at;
  }
}

TEST_F(Xxh3FileTest, MissingFileIsNotFoundNamingThePath) {
  fs::path missing = dir_ / "no_such_shard.bin";
  absl::StatusOr<uint64_t> sum = Xxh3File(missing);
  ASSERT_EQ(sum.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(std::string(sum.status().message()).find(missing.string()), std::string::npos)
      << std::string(sum.status().message());
}

TEST_F(Xxh3FileTest, DirectoryIsAnErrorNamingThePath) {
  absl::StatusOr<uint64_t> sum = Xxh3File(dir_);
  ASSERT_FALSE(sum.ok());
  EXPECT_NE(std::string(sum.status().message()).find(dir_.string()), std::string::npos)
      << std::string(sum.status().message());
}

TEST(FormatXxh3, WritesSixteenLowerCaseHexDigitsWithLeadingZeros) {
  EXPECT_EQ(FormatXxh3(0), "0000000000000000");
  EXPECT_EQ(FormatXxh3(0xabc), "0000000000000abc");
  EXPECT_EQ(FormatXxh3(0x0123456789abcdef), "0123456789abcdef");
  EXPECT_EQ(FormatXxh3(kEmptySum), "2d06800538d394c2");
  EXPECT_EQ(FormatXxh3(0xFFFFFFFFFFFFFFFF), "ffffffffffffffff");
}

TEST(ParseXxh3, RoundTripsFormatXxh3) {
  for (uint64_t v : {uint64_t{0}, uint64_t{1}, uint64_t{0xabc}, kEmptySum, kFoxSum, kLargeSum,
                     uint64_t{0x8000000000000000}, uint64_t{0xFFFFFFFFFFFFFFFF}}) {
    absl::StatusOr<uint64_t> parsed = ParseXxh3(FormatXxh3(v));
    ASSERT_TRUE(parsed.ok()) << FormatXxh3(v) << ": " << std::string(parsed.status().message());
    EXPECT_EQ(*parsed, v);
  }
}

TEST(ParseXxh3, AcceptsUpperCaseHexDigits) {
  absl::StatusOr<uint64_t> parsed = ParseXxh3("2D06800538D394C2");
  ASSERT_TRUE(parsed.ok()) << std::string(parsed.status().message());
  EXPECT_EQ(*parsed, kEmptySum);
}

TEST(ParseXxh3, RejectsWrongLengthAsInvalidArgument) {
  for (std::string_view text :
       {"", "2d06800538d394c", "2d06800538d394c20", "abc", "00000000000000000000000000000000"}) {
    EXPECT_EQ(ParseXxh3(text).status().code(), absl::StatusCode::kInvalidArgument)
        << "\"" << text << "\"";
  }
}

TEST(ParseXxh3, RejectsNonHexAsInvalidArgument) {
  const std::string_view kNonHex[] = {
      "2d06800538d394cg", "0x2d06800538d394",
      " 2d06800538d394c", "2d06800538d394c ",
      "-2d06800538d394c", "2d06800538d3 4c2",
      "zzzzzzzzzzzzzzzz", std::string_view("2d06800538d394\0c", 16)};
  for (std::string_view text : kNonHex) {
    ASSERT_EQ(text.size(), 16u) << "\"" << text << "\" should fail on content, not length";
    EXPECT_EQ(ParseXxh3(text).status().code(), absl::StatusCode::kInvalidArgument)
        << "\"" << text << "\"";
  }
}

TEST(ParseXxh3, RejectionQuotesTheInput) {
  absl::StatusOr<uint64_t> parsed = ParseXxh3("not-a-checksum");
  ASSERT_FALSE(parsed.ok());
  EXPECT_NE(std::string(parsed.status().message()).find("not-a-checksum"), std::string::npos)
      << std::string(parsed.status().message());
}

}  // namespace
}  // namespace belay
