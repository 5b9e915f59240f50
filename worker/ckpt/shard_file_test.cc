// Shard files: round trips across split entries, and that no truncation, flipped byte or
// crafted index gets past the reader (as a crash, a huge allocation or a silent success).
#include "worker/ckpt/shard_file.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <new>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "common/checksum.h"
#include "common/ckpt/layout.h"
#include "common/ckpt/test_dir.h"

// Records the largest single allocation while g_track_allocations is set, so the tests can
// show that a crafted index never makes the reader allocate more than the file's size.
namespace {
bool g_track_allocations = false;
size_t g_largest_allocation = 0;
}  // namespace

// noinline: inlined into callers, GCC would see malloc'd memory freed after `new` and warn.
__attribute__((noinline)) void* operator new(size_t size) {
  if (g_track_allocations && size > g_largest_allocation) g_largest_allocation = size;
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
__attribute__((noinline)) void operator delete(void* p) noexcept { std::free(p); }
__attribute__((noinline)) void operator delete(void* p, size_t) noexcept { std::free(p); }

namespace belay::ckpt {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

std::string ReadAll(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void WriteAll(const fs::path& p, const std::string& bytes) {
  // Unlink rather than truncate: ext4 flushes a truncated-and-rewritten file on close
  // (auto_da_alloc), which makes the loops below crawl.
  fs::remove(p);
  std::ofstream out(p, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

template <typename T>
T GetAt(const std::string& b, size_t off) {
  T v;
  std::memcpy(&v, b.data() + off, sizeof v);
  return v;
}

template <typename T>
void PutAt(std::string* b, size_t off, T v) {
  std::memcpy(b->data() + off, &v, sizeof v);
}

// Recomputes the footer's checksum, so that a crafted change reaches the index parser.
void Reseal(std::string* b) {
  const size_t body = b->size() - 16;
  PutAt<uint64_t>(b, body, Xxh3(std::string_view(b->data(), body)));
}

std::vector<float> Iota(size_t n, float start) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = start + static_cast<float>(i);
  return v;
}

class ShardFileTest : public TempDirTest {
 protected:
  // A small shard: "w" (f32, 10 elements) in two entries, "step" (i64), and "rng" (u8)
  // of which only elements [1, 4) are stored.
  fs::path WriteSmall(const std::string& name = "small.bin") {
    ShardWriter w;
    EXPECT_TRUE(w.Add("w", 4, 10, std::span<const float>(w_hi_)).ok());
    EXPECT_TRUE(w.Add("w", 0, 10, std::span<const float>(w_lo_)).ok());
    EXPECT_TRUE(w.Add("step", 0, 1, std::span<const int64_t>(step_)).ok());
    EXPECT_TRUE(w.Add("rng", 1, 5, std::span<const uint8_t>(rng_)).ok());
    w.SetMetadata(R"({"step":1200,"world_size":1})");
    absl::StatusOr<ShardFileInfo> info = w.Write(dir() / name);
    EXPECT_TRUE(info.ok()) << info.status();
    return dir() / name;
  }

  std::vector<float> w_lo_ = Iota(4, 0.5f);
  std::vector<float> w_hi_ = Iota(6, 4.5f);
  std::vector<int64_t> step_ = {int64_t{1} << 40};
  std::vector<uint8_t> rng_ = {7, 8, 9};
};

TEST_F(ShardFileTest, RoundTripsTensorsSplitAcrossEntries) {
  fs::path p = WriteSmall();
  absl::StatusOr<ShardReader> r = ShardReader::Open(p);
  ASSERT_TRUE(r.ok()) << r.status();

  std::vector<float> whole(10, -1.0f);
  ASSERT_TRUE(r->Read("w", 0, std::span<float>(whole)).ok());
  EXPECT_EQ(whole, Iota(10, 0.5f));

  std::vector<float> spanning(5, -1.0f);  // [2, 7) spans both entries
  ASSERT_TRUE(r->Read("w", 2, std::span<float>(spanning)).ok());
  EXPECT_EQ(spanning, Iota(5, 2.5f));

  std::vector<float> inside(2, -1.0f);  // [5, 7) inside the second entry
  ASSERT_TRUE(r->Read("w", 5, std::span<float>(inside)).ok());
  EXPECT_EQ(inside, Iota(2, 5.5f));

  std::vector<int64_t> step(1);
  ASSERT_TRUE(r->Read("step", 0, std::span<int64_t>(step)).ok());
  EXPECT_EQ(step, step_);

  std::vector<uint8_t> rng(2);
  ASSERT_TRUE(r->Read("rng", 2, std::span<uint8_t>(rng)).ok());
  EXPECT_EQ(rng, (std::vector<uint8_t>{8, 9}));

  ASSERT_EQ(r->entries().size(), 4u);
  EXPECT_EQ(r->entries()[0].name, "rng");
  EXPECT_EQ(r->entries()[1].name, "step");
  EXPECT_EQ(r->entries()[2].name, "w");
  EXPECT_EQ(r->entries()[2].offset, 0u);
  EXPECT_EQ(r->entries()[3].offset, 4u);
  EXPECT_EQ(r->entries()[3].count, 6u);
  EXPECT_EQ(r->entries()[3].total, 10u);
  EXPECT_EQ(r->entries()[3].dtype, DType::kF32);
  for (const ShardEntry& e : r->entries()) EXPECT_EQ(e.data_offset % 64, 0u) << e.name;
}

TEST_F(ShardFileTest, MetadataRoundTripsVerbatim) {
  const std::string json = "{\"rng\": [1, 2, 3], \"note\": \"gr\xC3\xBC\xC3\x9F\"}";
  ShardWriter w;
  w.SetMetadata(json);
  ASSERT_TRUE(w.Write(dir() / "m.bin").ok());
  absl::StatusOr<ShardReader> r = ShardReader::Open(dir() / "m.bin");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->metadata(), json);
  EXPECT_TRUE(r->entries().empty());

  ShardWriter empty;
  ASSERT_TRUE(empty.Write(dir() / "e.bin").ok());
  absl::StatusOr<ShardReader> e = ShardReader::Open(dir() / "e.bin");
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->metadata(), "");
}

TEST_F(ShardFileTest, WriteReportsSizeAndWholeFileSum) {
  ShardWriter w;
  std::vector<float> data = Iota(100, 0.0f);
  ASSERT_TRUE(w.Add("x", 0, 100, std::span<const float>(data)).ok());
  absl::StatusOr<ShardFileInfo> info = w.Write(dir() / "x.bin");
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->path, dir() / "x.bin");
  EXPECT_EQ(info->bytes, fs::file_size(dir() / "x.bin"));
  absl::StatusOr<uint64_t> sum = Xxh3File(dir() / "x.bin");
  ASSERT_TRUE(sum.ok());
  EXPECT_EQ(info->xxh3, *sum);
}

TEST_F(ShardFileTest, LayoutMatchesDocumentation) {
  std::string b = ReadAll(WriteSmall());
  ASSERT_GE(b.size(), 80u);
  EXPECT_EQ(b.substr(0, 8), "BELAYCKP");
  EXPECT_EQ(GetAt<uint32_t>(b, 8), 1u);         // format version
  EXPECT_EQ(GetAt<uint32_t>(b, 12), 64u);       // header size
  EXPECT_EQ(GetAt<uint64_t>(b, 16), b.size());  // file size
  EXPECT_EQ(GetAt<uint64_t>(b, 24), 64u);       // metadata offset
  const uint64_t meta = GetAt<uint64_t>(b, 32);
  EXPECT_EQ(b.substr(64, meta), R"({"step":1200,"world_size":1})");
  EXPECT_EQ(GetAt<uint64_t>(b, 40), 64 + meta);  // index offset
  EXPECT_EQ(GetAt<uint32_t>(b, 56), 4u);         // entries, in Add order:
  const size_t first = 64 + meta;
  EXPECT_EQ(GetAt<uint32_t>(b, first), 1u);        // name size of "w"
  EXPECT_EQ(GetAt<uint32_t>(b, first + 4), 1u);    // f32
  EXPECT_EQ(GetAt<uint64_t>(b, first + 8), 4u);    // element offset
  EXPECT_EQ(GetAt<uint64_t>(b, first + 16), 6u);   // count
  EXPECT_EQ(GetAt<uint64_t>(b, first + 24), 10u);  // total
  const uint64_t data = GetAt<uint64_t>(b, first + 32);
  EXPECT_EQ(b.substr(first + 40, 1), "w");
  EXPECT_EQ(GetAt<float>(b, data), 4.5f);
  EXPECT_EQ(b.substr(b.size() - 8), "BELAYEND");
  EXPECT_EQ(GetAt<uint64_t>(b, b.size() - 16), Xxh3(std::string_view(b.data(), b.size() - 16)));
}

TEST_F(ShardFileTest, ReadNamesTheTensorWhenMissingOrOutOfRange) {
  absl::StatusOr<ShardReader> r = ShardReader::Open(WriteSmall());
  ASSERT_TRUE(r.ok()) << r.status();
  std::vector<float> f(3);
  absl::Status s = r->Read("nope", 0, std::span<float>(f));
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(s.message()), HasSubstr("\"nope\""));

  s = r->Read("w", 8, std::span<float>(f));  // [8, 11) ends past the total of 10
  EXPECT_EQ(s.code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(std::string(s.message()), HasSubstr("\"w\""));

  std::vector<uint8_t> u(3);  // rng stores [1, 4); [0, 3) starts in a gap, [2, 5) ends in one
  s = r->Read("rng", 0, std::span<uint8_t>(u));
  EXPECT_EQ(s.code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(std::string(s.message()), HasSubstr("not in this shard"));
  s = r->Read("rng", 2, std::span<uint8_t>(u));
  EXPECT_EQ(s.code(), absl::StatusCode::kOutOfRange);

  s = r->Read("step", 0, std::span<float>(f.data(), 1));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("i64"));

  std::vector<float> none;
  EXPECT_TRUE(r->Read("w", 10, std::span<float>(none)).ok());
}

TEST_F(ShardFileTest, AddRejectsOverlapsAndContradictions) {
  ShardWriter w;
  std::vector<float> four(4);
  std::vector<int64_t> one(1);
  ASSERT_TRUE(w.Add("a", 0, 10, std::span<const float>(four)).ok());
  EXPECT_EQ(w.Add("a", 3, 10, std::span<const float>(four)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(w.Add("a", 4, 11, std::span<const float>(four)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(w.Add("a", 4, 10, std::span<const int64_t>(one)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(w.Add("a", 8, 10, std::span<const float>(four)).code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(w.Add("b", UINT64_MAX - 1, UINT64_MAX, std::span<const float>(four)).code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ(w.Add("", 0, 4, std::span<const float>(four)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      w.AddBytes("c", DType::kF32, 0, 4, std::as_bytes(std::span<const int64_t>(one)).subspan(0, 3))
          .code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(w.Add("a", 4, 10, std::span<const float>(four)).ok());
}

TEST_F(ShardFileTest, EveryFlippedByteIsDetected) {
  const fs::path p = WriteSmall();
  const std::string good = ReadAll(p);
  ASSERT_TRUE(ShardReader::Open(p).ok());
  const fs::path bad = dir() / "bad.bin";
  for (uint8_t mask : {uint8_t{0xFF}, uint8_t{0x01}, uint8_t{0x80}}) {
    for (size_t i = 0; i < good.size(); ++i) {
      std::string b = good;
      b[i] = static_cast<char>(static_cast<uint8_t>(b[i]) ^ mask);
      WriteAll(bad, b);
      absl::StatusOr<ShardReader> r = ShardReader::Open(bad);
      ASSERT_EQ(r.status().code(), absl::StatusCode::kDataLoss)
          << "byte " << i << " ^ " << int{mask} << ": " << r.status();
      ASSERT_THAT(std::string(r.status().message()), HasSubstr(bad.string()));
    }
  }
}

TEST_F(ShardFileTest, EveryTruncationIsDetected) {
  const std::string good = ReadAll(WriteSmall());
  const fs::path bad = dir() / "short.bin";
  for (size_t n = 0; n < good.size(); ++n) {
    WriteAll(bad, good.substr(0, n));
    absl::StatusOr<ShardReader> r = ShardReader::Open(bad);
    ASSERT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << n << ": " << r.status();
    ASSERT_THAT(std::string(r.status().message()),
                HasSubstr("truncated (" + std::to_string(n) + " bytes, expected at least "))
        << n;
  }
}

TEST_F(ShardFileTest, ErrorsSayWhatIsWrong) {
  const std::string good = ReadAll(WriteSmall());
  const fs::path bad = dir() / "bad.bin";

  WriteAll(bad, std::string(200, 'x'));
  EXPECT_THAT(std::string(ShardReader::Open(bad).status().message()), HasSubstr("bad magic"));

  std::string b = good;
  b[100] ^= 1;
  WriteAll(bad, b);
  const uint64_t stored = GetAt<uint64_t>(good, good.size() - 16);
  const uint64_t computed = Xxh3(std::string_view(b.data(), b.size() - 16));
  EXPECT_THAT(std::string(ShardReader::Open(bad).status().message()),
              HasSubstr("checksum mismatch: stored " + FormatXxh3(stored) + ", computed " +
                        FormatXxh3(computed)));

  b = good;
  PutAt<uint32_t>(&b, 8, 2);
  Reseal(&b);
  WriteAll(bad, b);
  absl::Status s = ShardReader::Open(bad).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(s.message()), HasSubstr("unsupported format version 2"));

  s = ShardReader::Open(dir() / "absent.bin").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(s.message()), HasSubstr("absent.bin"));
}

// Each case sets one field of a resealed file to a hostile value.
TEST_F(ShardFileTest, CraftedIndexValuesAreRejectedWithoutHugeAllocations) {
  const std::string good = ReadAll(WriteSmall());
  const size_t index = GetAt<uint64_t>(good, 40);
  struct Case {
    const char* what;
    size_t offset;
    uint64_t value;
    int width;
  };
  const Case cases[] = {
      {"entry count", 56, 0xFFFFFFFF, 4},
      {"metadata size", 32, UINT64_MAX - 10, 8},
      {"metadata offset", 24, UINT64_MAX, 8},
      {"index size", 48, uint64_t{1} << 40, 8},
      {"index offset", 40, UINT64_MAX - 4, 8},
      {"file size", 16, uint64_t{1} << 50, 8},
      {"header size", 12, 65, 4},
      {"name size", index, 0xFFFFFFFF, 4},
      {"zero name size", index, 0, 4},
      {"dtype", index + 4, 99, 4},
      {"element offset", index + 8, UINT64_MAX - 2, 8},
      {"count", index + 16, uint64_t{1} << 62, 8},
      {"total", index + 24, 3, 8},
      {"data offset", index + 32, UINT64_MAX - 8, 8},
      {"data offset into index", index + 32, index, 8},
  };
  const fs::path bad = dir() / "crafted.bin";
  for (const Case& c : cases) {
    std::string b = good;
    if (c.width == 4) {
      PutAt<uint32_t>(&b, c.offset, static_cast<uint32_t>(c.value));
    } else {
      PutAt<uint64_t>(&b, c.offset, c.value);
    }
    Reseal(&b);
    WriteAll(bad, b);
    g_largest_allocation = 0;
    g_track_allocations = true;
    absl::StatusOr<ShardReader> r = ShardReader::Open(bad);
    g_track_allocations = false;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << c.what << ": " << r.status();
    EXPECT_LE(g_largest_allocation, b.size() + 4096) << c.what;
  }
}

// Found by fuzz/ckpt_shard_fuzzer: the reader compared each range only with the one before
// it, so an empty range between two overlapping ones hid the overlap.
TEST_F(ShardFileTest, OverlapHiddenBehindAnEmptyRangeIsRejected) {
  ShardWriter w;
  ASSERT_TRUE(w.Add("w", 0, 10, std::span<const float>(w_lo_)).ok());
  ASSERT_TRUE(w.Add("w", 5, 10, std::span<const float>()).ok());
  ASSERT_TRUE(w.Add("w", 6, 10, std::span<const float>(w_hi_).first(3)).ok());
  ASSERT_TRUE(w.Write(dir() / "w.bin").ok());
  std::string b = ReadAll(dir() / "w.bin");
  PutAt<uint64_t>(&b, GetAt<uint64_t>(b, 40) + 16, 7);  // the first range becomes [0, 7)
  Reseal(&b);
  WriteAll(dir() / "w.bin", b);
  absl::StatusOr<ShardReader> r = ShardReader::Open(dir() / "w.bin");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << r.status();
  EXPECT_THAT(r.status().message(), HasSubstr("elements [6, 9) overlap [0, 7)"));
}

TEST_F(ShardFileTest, RandomlyCorruptedButResealedFilesNeverCrash) {
  const std::string good = ReadAll(WriteSmall());
  const size_t index_end = GetAt<uint64_t>(good, 40) + GetAt<uint64_t>(good, 48);
  const fs::path bad = dir() / "fuzz.bin";
  std::mt19937_64 rng(20240520);
  int opened = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    std::string b = good;
    const int edits = 1 + static_cast<int>(rng() % 6);
    for (int e = 0; e < edits; ++e) {
      // Mostly header and index bytes, where values steer the parser.
      const size_t pos = 8 + rng() % (index_end - 8);
      b[pos] = static_cast<char>(rng() % 3 == 0 ? 0xFF : rng());
    }
    Reseal(&b);
    WriteAll(bad, b);
    g_largest_allocation = 0;
    g_track_allocations = true;
    absl::StatusOr<ShardReader> r = ShardReader::Open(bad);
    g_track_allocations = false;
    ASSERT_LE(g_largest_allocation, b.size() + 4096) << "iteration " << iter;
    if (!r.ok()) {
      ASSERT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << r.status();
      continue;
    }
    ++opened;
    for (const ShardEntry& e : r->entries()) {
      std::vector<std::byte> out(e.count * DTypeSize(e.dtype));
      EXPECT_TRUE(r->ReadBytes(e.name, e.dtype, e.offset, out).ok()) << e.name;
    }
  }
  // Edits to names and metadata bytes leave a readable file; most others must not.
  EXPECT_LT(opened, 3000);
}

// An RLIMIT_FSIZE makes write(2) fail with EFBIG part-way, as a full disk would.
TEST_F(ShardFileTest, FailedWriteLeavesPreviousFileAndNoTemporary) {
  const fs::path p = WriteSmall("shard.bin");
  const std::string before = ReadAll(p);
  std::vector<float> big(1 << 20);
  ShardWriter w;
  ASSERT_TRUE(w.Add("big", 0, big.size(), std::span<const float>(big)).ok());

  struct rlimit old;
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old), 0);
  auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  struct rlimit small = old;
  small.rlim_cur = 64 * 1024;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
  absl::StatusOr<ShardFileInfo> info = w.Write(p);
  ::setrlimit(RLIMIT_FSIZE, &old);
  std::signal(SIGXFSZ, old_handler);

  ASSERT_FALSE(info.ok());
  EXPECT_THAT(std::string(info.status().message()), HasSubstr(".tmp"));
  EXPECT_EQ(ReadAll(p), before);
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir())) names.push_back(e.path().filename());
  EXPECT_EQ(names, std::vector<std::string>{"shard.bin"});
}

// A writer killed mid-write (SIGXFSZ's default action, in a child) leaves only a temporary
// file: nothing under the final name, and RemoveIncomplete deletes the leftover.
TEST_F(ShardFileTest, CrashMidWriteLeavesOnlyATemporaryThatRemoveIncompleteDeletes) {
  const fs::path step_dir = StepDir(dir(), "c", 5);
  ASSERT_TRUE(fs::create_directories(step_dir));
  WriteAll(step_dir / kManifestFileName, "{}");  // committed, as far as the layout sees
  const fs::path final_path = step_dir / ShardFileName(0);
  std::vector<float> big(1 << 20, 1.0f);

  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    struct rlimit no_core = {0, 0};
    ::setrlimit(RLIMIT_CORE, &no_core);
    struct rlimit small = {64 * 1024, 64 * 1024};
    ::setrlimit(RLIMIT_FSIZE, &small);
    std::signal(SIGXFSZ, SIG_DFL);
    ShardWriter w;
    (void)w.Add("big", 0, big.size(), std::span<const float>(big));
    (void)w.Write(final_path);
    ::_exit(0);  // Not reached: the write past the limit kills the process.
  }
  int wstatus = 0;
  ASSERT_EQ(::waitpid(pid, &wstatus, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(wstatus)) << wstatus;
  EXPECT_EQ(WTERMSIG(wstatus), SIGXFSZ);

  EXPECT_FALSE(fs::exists(final_path));
  std::vector<fs::path> temps;
  for (const auto& e : fs::directory_iterator(step_dir)) {
    if (e.path().extension() == ".tmp") temps.push_back(e.path());
  }
  ASSERT_EQ(temps.size(), 1u);
  EXPECT_EQ(temps[0].filename().string().rfind("rank_00000.bin.", 0), 0u) << temps[0];

  absl::StatusOr<std::vector<fs::path>> removed = RemoveIncomplete(dir(), "c");
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_EQ(*removed, temps);
  EXPECT_FALSE(fs::exists(temps[0]));
  EXPECT_TRUE(fs::exists(step_dir / kManifestFileName));
}

}  // namespace
}  // namespace belay::ckpt
