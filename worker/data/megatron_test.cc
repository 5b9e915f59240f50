// Megatron indexed datasets (<prefix>.bin + <prefix>.idx) read as token shards: round trips
// for both token types, and each validation error with the file and byte offset it names.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>
#include <vector>

#include "worker/data/loader.h"
#include "worker/data/shard.h"

namespace belay::data {
namespace {

namespace fs = std::filesystem;

std::string Message(const absl::Status& s) { return std::string(s.message()); }

template <typename T>
void Put(std::string* out, T v) {
  out->append(reinterpret_cast<const char*>(&v), sizeof(v));
}

// What an index holds; Bytes() lays it out as Megatron writes it, and tests damage fields.
struct Index {
  uint64_t version = 1;
  uint8_t dtype = kMegatronDTypeUint16;
  std::vector<int32_t> lengths;
  std::vector<int64_t> pointers;
  std::vector<int64_t> documents;
  bool modes = false;  // the multimodal sequence modes after the document boundaries

  // Documents of the given lengths (one sequence each), back to back.
  static Index Of(std::vector<int32_t> lengths, uint8_t dtype = kMegatronDTypeUint16) {
    Index x;
    x.dtype = dtype;
    const int width = dtype == kMegatronDTypeUint16 ? 2 : 4;
    int64_t at = 0;
    x.documents.push_back(0);
    for (size_t i = 0; i < lengths.size(); ++i) {
      x.lengths.push_back(lengths[i]);
      x.pointers.push_back(at);
      at += int64_t{lengths[i]} * width;
      x.documents.push_back(static_cast<int64_t>(i + 1));
    }
    return x;
  }
  std::string Bytes() const {
    std::string s(kMegatronIndexMagic);
    Put(&s, version);
    Put(&s, dtype);
    Put(&s, static_cast<uint64_t>(lengths.size()));
    Put(&s, static_cast<uint64_t>(documents.size()));
    for (int32_t l : lengths) Put(&s, l);
    for (int64_t p : pointers) Put(&s, p);
    for (int64_t d : documents) Put(&s, d);
    if (modes) s.append(lengths.size(), '\0');
    return s;
  }
};

class MegatronTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::path(::testing::TempDir()) /
           (std::string("belay_megatron_") + info->name() + "_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    ASSERT_TRUE(fs::create_directories(dir_)) << dir_;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  static void WriteFile(const fs::path& p, const std::string& bytes) {
    std::ofstream(p, std::ios::binary)
        .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  // <dir>/<name>.bin with `tokens` of the index's type, and <dir>/<name>.idx; returns the .bin.
  fs::path Write(const std::string& name, const Index& index, const std::vector<int64_t>& tokens) {
    std::string bin;
    for (int64_t t : tokens) {
      if (index.dtype == kMegatronDTypeUint16) {
        Put(&bin, static_cast<uint16_t>(t));
      } else {
        Put(&bin, static_cast<int32_t>(t));
      }
    }
    WriteFile(dir_ / (name + ".bin"), bin);
    WriteFile(dir_ / (name + ".idx"), index.Bytes());
    return dir_ / (name + ".bin");
  }
  static std::vector<int32_t> ReadAll(const TokenShard& s) {
    std::vector<int32_t> out(static_cast<size_t>(s.num_tokens()));
    s.Read(0, s.num_tokens(), out.data());
    return out;
  }

  fs::path dir_;
};

TEST_F(MegatronTest, Uint16AndInt32DatasetsReadAsOneTokenStream) {
  const fs::path a = Write("a_text_document", Index::Of({3, 0, 2}), {1, 2, 3, 65535, 7});
  absl::StatusOr<TokenShard> s = TokenShard::OpenMegatron(a, 65536);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->num_tokens(), 5);
  EXPECT_EQ(s->version(), kShardVersionU16);
  EXPECT_EQ(ReadAll(*s), (std::vector<int32_t>{1, 2, 3, 65535, 7}));
  int32_t two[2];
  s->Read(3, 2, two);
  EXPECT_EQ(two[0], 65535);
  EXPECT_EQ(two[1], 7);

  const fs::path b = Write("b", Index::Of({2, 2}, kMegatronDTypeInt32), {70000, 0, 5, 131071});
  absl::StatusOr<TokenShard> t = TokenShard::Open(b, 131072, ShardFormat::kMegatron);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->version(), kShardVersionU32);
  EXPECT_EQ(ReadAll(*t), (std::vector<int32_t>{70000, 0, 5, 131071}));
}

TEST_F(MegatronTest, MultimodalSequenceModesAreAccepted) {
  Index x = Index::Of({2, 1});
  x.modes = true;
  absl::StatusOr<TokenShard> s = TokenShard::OpenMegatron(Write("m", x, {4, 5, 6}), 10);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(ReadAll(*s), (std::vector<int32_t>{4, 5, 6}));
}

TEST_F(MegatronTest, ADamagedIndexIsReportedWithItsByteOffset) {
  struct Case {
    std::string name;
    std::string idx_bytes;
    absl::StatusCode code;
    std::string message;
  };
  std::vector<Case> cases;
  const Index good = Index::Of({3, 2});
  {
    std::string b = good.Bytes();
    b[0] = 'X';
    cases.push_back(
        {"magic", b, absl::StatusCode::kInvalidArgument, "byte 0: magic is not \"MMIDIDX\""});
  }
  {
    Index x = good;
    x.version = 2;
    cases.push_back({"version", x.Bytes(), absl::StatusCode::kInvalidArgument,
                     "byte 9: index version is 2, want 1"});
  }
  {
    Index x = good;
    x.dtype = 7;
    cases.push_back({"dtype", x.Bytes(), absl::StatusCode::kInvalidArgument,
                     "byte 17: dtype code 7 (float32) is not a token type belay reads; want 8 "
                     "(uint16) or 4 (int32)"});
  }
  cases.push_back({"short", good.Bytes().substr(0, 20), absl::StatusCode::kInvalidArgument,
                   "byte 0: file is 20 bytes, shorter than the 34-byte index header"});
  cases.push_back(
      {"truncated", good.Bytes().substr(0, 60), absl::StatusCode::kDataLoss,
       "byte 60: file is 60 bytes, but its header counts 2 sequences and 3 document boundaries: "
       "34 + 2 × 12 + 3 × 8 bytes (truncated)"});
  {
    std::string b = good.Bytes();
    std::memset(b.data() + 18, 0xff, 8);  // a sequence count no file could hold
    cases.push_back({"huge count", b, absl::StatusCode::kDataLoss,
                     "byte 82: file is 82 bytes, but its header counts 18446744073709551615"});
  }
  {
    Index x = good;
    x.lengths[1] = -2;
    cases.push_back({"negative length", x.Bytes(), absl::StatusCode::kDataLoss,
                     "byte 38: sequence 1 has length -2"});
  }
  {
    Index x = good;
    x.pointers[1] = 8;
    cases.push_back({"gap", x.Bytes(), absl::StatusCode::kDataLoss,
                     "byte 50: sequence 1 starts at byte 8 of the .bin, want 6 (the sequences must "
                     "lie back to back)"});
  }
  {
    Index x = good;
    x.documents = {0, 2, 1};
    cases.push_back({"documents out of order", x.Bytes(), absl::StatusCode::kDataLoss,
                     "byte 74: document boundary 2 is 1; want 0 first, then non-decreasing, 2 (the "
                     "sequence count) last"});
  }
  {
    Index x = good;
    x.documents = {1, 2, 2};
    cases.push_back({"documents not from 0", x.Bytes(), absl::StatusCode::kDataLoss,
                     "byte 58: document boundary 0 is 1"});
  }
  {
    Index x = good;
    x.documents = {};
    cases.push_back({"no documents", x.Bytes(), absl::StatusCode::kDataLoss,
                     "byte 26: no document boundaries"});
  }
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const fs::path bin = Write("d", good, {1, 2, 3, 4, 5});
    WriteFile(dir_ / "d.idx", c.idx_bytes);
    absl::StatusOr<TokenShard> s = TokenShard::OpenMegatron(bin, 10);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.status().code(), c.code) << s.status();
    EXPECT_NE(Message(s.status()).find((dir_ / "d.idx").string() + ": " + c.message),
              std::string::npos)
        << s.status();
  }
}

TEST_F(MegatronTest, TheBinMustHoldWhatItsIndexSaysWithTokensInTheVocabulary) {
  const Index x = Index::Of({3, 2});
  absl::StatusOr<TokenShard> s = TokenShard::OpenMegatron(Write("short", x, {1, 2, 3, 4}), 10);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(
      Message(s.status())
          .find("short.bin: byte 8: file is 8 bytes, but its index short.idx says 5 tokens × 2 "
                "bytes = 10 bytes (truncated: 2 bytes missing)"),
      std::string::npos)
      << s.status();

  s = TokenShard::OpenMegatron(Write("wide", x, {1, 2, 3, 4, 10}), 10);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(Message(s.status()).find("wide.bin: byte 8: token 4 is 10, not in [0, 10)"),
            std::string::npos)
      << s.status();

  s = TokenShard::OpenMegatron(
      Write("negative", Index::Of({3, 2}, kMegatronDTypeInt32), {1, -5, 3, 4, 5}), 10);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(Message(s.status()).find("negative.bin: byte 4: token 1 is -5, not in [0, 10)"),
            std::string::npos)
      << s.status();

  WriteFile(dir_ / "lonely.bin", std::string(4, '\0'));
  s = TokenShard::OpenMegatron(dir_ / "lonely.bin", 10);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kNotFound) << s.status();
  EXPECT_NE(Message(s.status()).find("lonely.idx"), std::string::npos) << s.status();

  s = TokenShard::OpenMegatron(dir_ / "lonely.idx", 10);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(Message(s.status()).find("not the .bin of a Megatron dataset"), std::string::npos)
      << s.status();
}

TEST_F(MegatronTest, TheLoaderTakesTheBinFilesAGlobMatchesAndPassesOverTheirIndexes) {
  std::vector<int64_t> a(41), b(33);
  for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<int64_t>(i % 50);
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<int64_t>((i * 7) % 50);
  Write("a", Index::Of({20, 21}), a);
  Write("b", Index::Of({33}), b);
  DataLoaderOptions o;
  o.globs = {(dir_ / "*").string()};
  o.seq_len = 8;
  o.vocab_size = 50;
  o.shuffle = false;
  o.format = ShardFormat::kMegatron;
  absl::StatusOr<std::unique_ptr<DataLoader>> l = DataLoader::Open(o);
  ASSERT_TRUE(l.ok()) << l.status();
  // (41 − 1) / 8 = 5 sequences of a, then (33 − 1) / 8 = 4 of b.
  EXPECT_EQ((*l)->sequences_per_epoch(), 9u);
  std::vector<int32_t> seq(9);
  (*l)->Sequence(5, seq.data());
  for (size_t i = 0; i < seq.size(); ++i) EXPECT_EQ(seq[i], b[i]) << i;

  o.globs = {(dir_ / "*.idx").string()};
  l = DataLoader::Open(o);
  ASSERT_FALSE(l.ok());
  EXPECT_NE(Message(l.status()).find("match only .idx files"), std::string::npos) << l.status();
}

}  // namespace
}  // namespace belay::data
