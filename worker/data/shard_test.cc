// Token shards: write/open round trips for both versions, and every validation error with the
// byte offset it names.
#include "worker/data/shard.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>
#include <vector>

namespace belay::data {
namespace {

namespace fs = std::filesystem;

std::string Message(const absl::Status& s) { return std::string(s.message()); }

// A fresh directory per test, removed afterwards.
class ShardTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::path(::testing::TempDir()) /
           (std::string("belay_shard_") + info->name() + "_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    ASSERT_TRUE(fs::create_directories(dir_)) << dir_;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  // A file of a header (magic, version, count) followed by `token_bytes` raw bytes.
  fs::path WriteRaw(const std::string& name, int32_t magic, int32_t version, int32_t count,
                    const std::string& token_bytes) {
    std::vector<int32_t> header(kShardHeaderInts, 0);
    header[0] = magic;
    header[1] = version;
    header[2] = count;
    fs::path p = dir_ / name;
    std::ofstream out(p, std::ios::binary);
    out.write(reinterpret_cast<const char*>(header.data()), kShardHeaderBytes);
    out.write(token_bytes.data(), static_cast<std::streamsize>(token_bytes.size()));
    return p;
  }

  static std::string U16(std::vector<uint16_t> v) {
    std::string s(v.size() * 2, '\0');
    std::memcpy(s.data(), v.data(), s.size());
    return s;
  }

  std::vector<std::string> Names() const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(dir_)) names.push_back(e.path().filename());
    return names;
  }

  fs::path dir_;
};

std::vector<int32_t> ReadAll(const TokenShard& shard) {
  std::vector<int32_t> out(static_cast<size_t>(shard.num_tokens()));
  shard.Read(0, shard.num_tokens(), out.data());
  return out;
}

// llm.c's Llama 3 shards (magic 20240801, version 7, uint32 tokens), as its data scripts write
// them: a Python script with numpy, like dev/data/data_common.py's write_datafile.
TEST_F(ShardTest, ReadsShardsWrittenLikeLlmcDataScripts) {
  const std::vector<int32_t> tokens = {0, 1, 65535, 65536, 131071, 128000, 7};
  for (const std::string kind : {"gpt-2", "llama-3"}) {
    const fs::path p = dir_ / (kind + ".bin");
    std::string cmd = "/usr/bin/python3 " BELAY_SOURCE_DIR "/worker/data/llmc_shard.py " +
                      p.string() + " " + kind;
    const bool wide = kind == "llama-3";
    for (int32_t t : tokens) {
      if (wide || t < 65536) cmd += " " + std::to_string(t);
    }
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    absl::StatusOr<TokenShard> shard = TokenShard::Open(p, 131072);
    ASSERT_TRUE(shard.ok()) << shard.status();
    EXPECT_EQ(shard->version(), wide ? kShardVersionLlama3 : kShardVersionU16);
    EXPECT_EQ(shard->token_width(), wide ? 4 : 2);
    std::vector<int32_t> want;
    for (int32_t t : tokens) {
      if (wide || t < 65536) want.push_back(t);
    }
    EXPECT_EQ(ReadAll(*shard), want) << kind;
  }
}

TEST_F(ShardTest, Version7RoundTripsUnderTheLlama3Magic) {
  const std::vector<int32_t> tokens = {131071, 0, 70000, 2};
  const fs::path p = dir_ / "l3.bin";
  ASSERT_TRUE(WriteTokenShard(p, tokens, kShardVersionLlama3).ok());
  std::ifstream in(p, std::ios::binary);
  int32_t header[3];
  in.read(reinterpret_cast<char*>(header), sizeof(header));
  EXPECT_EQ(header[0], 20240801);
  EXPECT_EQ(header[1], 7);
  EXPECT_EQ(header[2], 4);
  absl::StatusOr<TokenShard> shard = TokenShard::Open(p, 131072);
  ASSERT_TRUE(shard.ok()) << shard.status();
  EXPECT_EQ(ReadAll(*shard), tokens);
  EXPECT_FALSE(TokenShard::Open(p, 131071).ok()) << "token 131071 is outside a 131071 vocabulary";
}

TEST_F(ShardTest, Version1RoundTripsUint16Tokens) {
  std::vector<int32_t> tokens = {0, 1, 256, 65535, 12345, 7};
  fs::path p = dir_ / "a.bin";
  ASSERT_TRUE(WriteTokenShard(p, tokens, kShardVersionU16).ok());
  EXPECT_EQ(fs::file_size(p), static_cast<uintmax_t>(kShardHeaderBytes + 2 * 6));
  absl::StatusOr<TokenShard> shard = TokenShard::Open(p, 65536);
  ASSERT_TRUE(shard.ok()) << shard.status();
  EXPECT_EQ(shard->version(), kShardVersionU16);
  EXPECT_EQ(shard->token_width(), 2);
  EXPECT_EQ(shard->num_tokens(), 6);
  EXPECT_EQ(ReadAll(*shard), tokens);
  std::vector<int32_t> mid(3, -1);
  shard->Read(2, 3, mid.data());
  EXPECT_EQ(mid, (std::vector<int32_t>{256, 65535, 12345}));
  EXPECT_EQ(Names(), std::vector<std::string>{"a.bin"}) << "no temporary file left behind";
}

TEST_F(ShardTest, Version2RoundTripsUint32Tokens) {
  std::vector<int32_t> tokens = {0, 65536, 100000, 2147483647, 3};
  fs::path p = dir_ / "b.bin";
  ASSERT_TRUE(WriteTokenShard(p, tokens, kShardVersionU32).ok());
  EXPECT_EQ(fs::file_size(p), static_cast<uintmax_t>(kShardHeaderBytes + 4 * 5));
  absl::StatusOr<TokenShard> shard = TokenShard::Open(p, int64_t{1} << 31);
  ASSERT_TRUE(shard.ok()) << shard.status();
  EXPECT_EQ(shard->version(), kShardVersionU32);
  EXPECT_EQ(shard->token_width(), 4);
  EXPECT_EQ(ReadAll(*shard), tokens);
}

TEST_F(ShardTest, HeaderIsLlmcLayout) {
  fs::path p = dir_ / "h.bin";
  ASSERT_TRUE(WriteTokenShard(p, std::vector<int32_t>{5, 6, 7}, kShardVersionU16).ok());
  std::ifstream in(p, std::ios::binary);
  std::vector<int32_t> header(kShardHeaderInts);
  in.read(reinterpret_cast<char*>(header.data()), kShardHeaderBytes);
  EXPECT_EQ(header[0], 20240520);
  EXPECT_EQ(header[1], 1);
  EXPECT_EQ(header[2], 3);
  for (int64_t i = 3; i < kShardHeaderInts; ++i) EXPECT_EQ(header[i], 0) << i;
}

TEST_F(ShardTest, EmptyShardOpens) {
  fs::path p = dir_ / "e.bin";
  ASSERT_TRUE(WriteTokenShard(p, {}, kShardVersionU16).ok());
  absl::StatusOr<TokenShard> shard = TokenShard::Open(p, 10);
  ASSERT_TRUE(shard.ok()) << shard.status();
  EXPECT_EQ(shard->num_tokens(), 0);
}

TEST_F(ShardTest, MovedShardKeepsItsMapping) {
  fs::path p = dir_ / "m.bin";
  ASSERT_TRUE(WriteTokenShard(p, std::vector<int32_t>{9, 8, 7}, kShardVersionU16).ok());
  absl::StatusOr<TokenShard> opened = TokenShard::Open(p, 10);
  ASSERT_TRUE(opened.ok());
  TokenShard moved(*std::move(opened));
  TokenShard assigned = std::move(moved);
  EXPECT_EQ(ReadAll(assigned), (std::vector<int32_t>{9, 8, 7}));
  EXPECT_EQ(assigned.path(), p);
}

TEST_F(ShardTest, WriteReplacesAnExistingShard) {
  fs::path p = dir_ / "r.bin";
  ASSERT_TRUE(WriteTokenShard(p, std::vector<int32_t>{1, 2, 3, 4}, kShardVersionU16).ok());
  ASSERT_TRUE(WriteTokenShard(p, std::vector<int32_t>{5}, kShardVersionU16).ok());
  absl::StatusOr<TokenShard> shard = TokenShard::Open(p, 10);
  ASSERT_TRUE(shard.ok());
  EXPECT_EQ(ReadAll(*shard), std::vector<int32_t>{5});
}

TEST_F(ShardTest, WriteRefusesTokenTooWideForVersion1) {
  fs::path p = dir_ / "w.bin";
  absl::Status s = WriteTokenShard(p, std::vector<int32_t>{1, 65536}, kShardVersionU16);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Message(s),
            p.string() + ": token 1 is 65536, which does not fit version 1 (uint16 tokens)");
  EXPECT_TRUE(Names().empty()) << "neither the shard nor a temporary file may remain";
}

TEST_F(ShardTest, WriteRefusesNegativeToken) {
  fs::path p = dir_ / "n.bin";
  absl::Status s = WriteTokenShard(p, std::vector<int32_t>{-1}, kShardVersionU32);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Message(s),
            p.string() + ": token 0 is -1, which does not fit version 2 (uint32 tokens)");
  EXPECT_TRUE(Names().empty());
}

TEST_F(ShardTest, WriteRefusesUnknownVersion) {
  absl::Status s = WriteTokenShard(dir_ / "v.bin", std::vector<int32_t>{1}, 3);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Message(s), (dir_ / "v.bin").string() + ": shard version 3 is not 1, 2 or 7");
}

TEST_F(ShardTest, WriteIntoMissingDirectoryIsNotFound) {
  absl::Status s = WriteTokenShard(dir_ / "nope" / "x.bin", std::vector<int32_t>{1}, 1);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
}

TEST_F(ShardTest, UncommittedWriterLeavesNothing) {
  {
    absl::StatusOr<TokenShardWriter> w = TokenShardWriter::Create(dir_ / "u.bin", 1);
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE(w->Append(std::vector<int32_t>{1, 2}).ok());
    EXPECT_EQ(Names().size(), 1u) << "the temporary file exists while writing";
  }
  EXPECT_TRUE(Names().empty());
}

TEST_F(ShardTest, TinyFileIsNotAShard) {
  fs::path p = dir_ / "tiny.bin";
  std::ofstream(p, std::ios::binary) << "twelve bytes";
  absl::StatusOr<TokenShard> shard = TokenShard::Open(p, 10);
  EXPECT_EQ(shard.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Message(shard.status()),
            p.string() + ": byte 0: file is 12 bytes, shorter than the 1024-byte shard header");
}

TEST_F(ShardTest, BadMagicIsNotAShard) {
  fs::path p = WriteRaw("magic.bin", 20240521, 1, 0, "");
  absl::StatusOr<TokenShard> shard = TokenShard::Open(p, 10);
  EXPECT_EQ(shard.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      Message(shard.status()),
      p.string() +
          ": byte 0: magic is 20240521, want 20240520 or 20240801 (not an llm.c token shard)");
}

TEST_F(ShardTest, VersionMustBelongToTheMagic) {
  fs::path p = WriteRaw("llama3_v1.bin", kShardMagicLlama3, kShardVersionU16, 0, "");
  absl::StatusOr<TokenShard> shard = TokenShard::Open(p, 10);
  EXPECT_EQ(shard.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Message(shard.status()),
            p.string() + ": byte 4: version is 1, want 7 (uint32 tokens) under magic 20240801");
}

TEST_F(ShardTest, UnknownVersionIsRejected) {
  fs::path p = WriteRaw("version.bin", kShardMagic, 7, 0, "");
  absl::StatusOr<TokenShard> shard = TokenShard::Open(p, 10);
  EXPECT_EQ(shard.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Message(shard.status()),
            p.string() + ": byte 4: version is 7, want 1 (uint16 tokens) or 2 (uint32 tokens)");
}

TEST_F(ShardTest, NegativeCountIsDataLoss) {
  fs::path p = WriteRaw("count.bin", kShardMagic, 1, -3, "");
  absl::StatusOr<TokenShard> shard = TokenShard::Open(p, 10);
  EXPECT_EQ(shard.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(Message(shard.status()), p.string() + ": byte 8: token count is -3, negative");
}

TEST_F(ShardTest, TruncatedFileReportsBothSizes) {
  fs::path p = WriteRaw("trunc.bin", kShardMagic, 1, 10, U16({1, 2, 3, 4, 5, 6, 7, 8, 9}));
  absl::StatusOr<TokenShard> shard = TokenShard::Open(p, 10);
  EXPECT_EQ(shard.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(Message(shard.status()),
            p.string() +
                ": byte 1042: file is 1042 bytes, but its header says 1024 + 10 tokens × 2 bytes "
                "= 1044 bytes (truncated: 2 bytes missing)");
}

TEST_F(ShardTest, ExtraBytesReportBothSizes) {
  fs::path p = WriteRaw("extra.bin", kShardMagic, 2, 1, std::string(7, '\0'));
  absl::StatusOr<TokenShard> shard = TokenShard::Open(p, 10);
  EXPECT_EQ(shard.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(Message(shard.status()),
            p.string() +
                ": byte 1028: file is 1031 bytes, but its header says 1024 + 1 tokens × 4 bytes "
                "= 1028 bytes (3 extra bytes)");
}

TEST_F(ShardTest, TokenAtVocabSizeNamesIndexAndOffset) {
  fs::path p = WriteRaw("vocab.bin", kShardMagic, 1, 5, U16({0, 99, 42, 100, 101}));
  absl::StatusOr<TokenShard> shard = TokenShard::Open(p, 100);
  EXPECT_EQ(shard.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Message(shard.status()),
            p.string() + ": byte 1030: token 3 is 100, not below the vocabulary size 100");
  EXPECT_TRUE(TokenShard::Open(p, 102).ok()) << "the same file fits a larger vocabulary";
}

TEST_F(ShardTest, Uint32TokenAboveInt32RangeIsOutOfVocabulary) {
  std::string bytes(4, '\xff');  // 4294967295
  fs::path p = WriteRaw("big.bin", kShardMagic, 2, 1, bytes);
  absl::StatusOr<TokenShard> shard = TokenShard::Open(p, int64_t{1} << 31);
  EXPECT_EQ(shard.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Message(shard.status()),
            p.string() + ": byte 1024: token 0 is 4294967295, not below the vocabulary size " +
                "2147483648");
}

TEST_F(ShardTest, MissingFileIsNotFound) {
  absl::StatusOr<TokenShard> shard = TokenShard::Open(dir_ / "absent.bin", 10);
  EXPECT_EQ(shard.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Message(shard.status()),
            (dir_ / "absent.bin").string() + ": cannot open: No such file or directory");
}

TEST_F(ShardTest, VocabularySizeMustBePositive) {
  fs::path p = dir_ / "ok.bin";
  ASSERT_TRUE(WriteTokenShard(p, std::vector<int32_t>{1}, 1).ok());
  EXPECT_EQ(TokenShard::Open(p, 0).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(ShardTest, ReadOutsideTheShardAborts) {
  fs::path p = dir_ / "d.bin";
  ASSERT_TRUE(WriteTokenShard(p, std::vector<int32_t>{1, 2}, 1).ok());
  absl::StatusOr<TokenShard> shard = TokenShard::Open(p, 10);
  ASSERT_TRUE(shard.ok());
  int32_t out[3];
  EXPECT_DEATH(shard->Read(0, 3, out), "outside");
}

}  // namespace
}  // namespace belay::data
