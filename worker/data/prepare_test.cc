// Byte-level corpus preparation: tokens, end-of-text placement, split sizes and shard files.
#include "worker/data/prepare.h"

#include <gtest/gtest.h>
#include <unistd.h>

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

class PrepareTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::path(::testing::TempDir()) /
           (std::string("belay_prepare_") + info->name() + "_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    ASSERT_TRUE(fs::create_directories(dir_)) << dir_;
    out_ = dir_ / "out";
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  fs::path Text(const std::string& name, const std::string& content) {
    fs::path p = dir_ / name;
    std::ofstream(p, std::ios::binary) << content;
    return p;
  }

  fs::path dir_;
  fs::path out_;
};

std::vector<int32_t> Tokens(const fs::path& p) {
  absl::StatusOr<TokenShard> shard = TokenShard::Open(p, kByteVocabSize);
  EXPECT_TRUE(shard.ok()) << shard.status();
  if (!shard.ok()) return {};
  EXPECT_EQ(shard->version(), kShardVersionU16);
  std::vector<int32_t> out(static_cast<size_t>(shard->num_tokens()));
  shard->Read(0, shard->num_tokens(), out.data());
  return out;
}

std::vector<int32_t> Bytes(const std::string& s) {
  std::vector<int32_t> out;
  for (char c : s) out.push_back(static_cast<unsigned char>(c));
  return out;
}

TEST(ByteTokenizer, EndOfTextThenOneTokenPerByte) {
  std::vector<int32_t> tokens = {1};
  AppendByteDocument("h\xc3\xa9!", &tokens);  // "hé!" in UTF-8
  EXPECT_EQ(tokens, (std::vector<int32_t>{1, kEndOfText, 'h', 0xc3, 0xa9, '!'}));
  AppendByteDocument("", &tokens);
  EXPECT_EQ(tokens.back(), kEndOfText);
}

TEST_F(PrepareTest, SplitsTheLastFractionIntoValAndCutsShards) {
  fs::path a = Text("a.txt", "abc");
  fs::path b = Text("b.txt", "hello");
  // 1 + 3 + 1 + 5 = 10 tokens; val = the last 2, train = the first 8 in shards of 3.
  absl::StatusOr<PrepareSummary> s = PrepareByteCorpus(
      {.out_dir = out_, .inputs = {a, b}, .val_fraction = 0.2, .shard_tokens = 3});
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->train.tokens, 8);
  EXPECT_EQ(s->val.tokens, 2);
  ASSERT_EQ(s->train.files,
            (std::vector<fs::path>{out_ / "train_000000.bin", out_ / "train_000001.bin",
                                   out_ / "train_000002.bin"}));
  ASSERT_EQ(s->val.files, std::vector<fs::path>{out_ / "val_000000.bin"});
  EXPECT_EQ(Tokens(s->train.files[0]), (std::vector<int32_t>{kEndOfText, 'a', 'b'}));
  EXPECT_EQ(Tokens(s->train.files[1]), (std::vector<int32_t>{'c', kEndOfText, 'h'}));
  EXPECT_EQ(Tokens(s->train.files[2]), (std::vector<int32_t>{'e', 'l'}));
  EXPECT_EQ(Tokens(s->val.files[0]), (std::vector<int32_t>{'l', 'o'}));
  EXPECT_EQ(std::distance(fs::directory_iterator(out_), fs::directory_iterator()), 4)
      << "no temporary files remain";
}

TEST_F(PrepareTest, DefaultsPutFivePercentInValAndOneShardPerSplit) {
  std::string text(1999, 'x');  // 2000 tokens with its end-of-text
  absl::StatusOr<PrepareSummary> s =
      PrepareByteCorpus({.out_dir = out_, .inputs = {Text("x.txt", text)}});
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->train.tokens, 1900);
  EXPECT_EQ(s->val.tokens, 100);
  EXPECT_EQ(s->train.files.size(), 1u);
  EXPECT_EQ(s->val.files.size(), 1u);
  std::vector<int32_t> train = Tokens(s->train.files[0]);
  EXPECT_EQ(train.front(), kEndOfText);
  EXPECT_EQ(std::vector<int32_t>(train.begin() + 1, train.end()), Bytes(std::string(1899, 'x')));
}

TEST_F(PrepareTest, ZeroFractionWritesNoValFiles) {
  absl::StatusOr<PrepareSummary> s =
      PrepareByteCorpus({.out_dir = out_, .inputs = {Text("a.txt", "ab")}, .val_fraction = 0.0});
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->train.tokens, 3);
  EXPECT_TRUE(s->val.files.empty());
  EXPECT_FALSE(fs::exists(out_ / "val_000000.bin"));
}

TEST_F(PrepareTest, OutputOpensInTheLoader) {
  absl::StatusOr<PrepareSummary> s = PrepareByteCorpus(
      {.out_dir = out_, .inputs = {Text("a.txt", std::string(100, 'q'))}, .shard_tokens = 40});
  ASSERT_TRUE(s.ok()) << s.status();
  auto loader = DataLoader::Open({.globs = {(out_ / "train_*.bin").string()},
                                  .seq_len = 8,
                                  .vocab_size = kByteVocabSize,
                                  .shuffle = false});
  ASSERT_TRUE(loader.ok()) << loader.status();
  EXPECT_EQ((*loader)->shards().size(), 3u);  // 96 train tokens: 40 + 40 + 16
  std::vector<int32_t> seq(9);
  (*loader)->Sequence(0, seq.data());
  EXPECT_EQ(seq.front(), kEndOfText);
  EXPECT_EQ(seq.back(), 'q');
}

TEST_F(PrepareTest, EmptyInputIsAnError) {
  fs::path e = Text("empty.txt", "");
  absl::StatusOr<PrepareSummary> s =
      PrepareByteCorpus({.out_dir = out_, .inputs = {Text("a.txt", "a"), e}});
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Message(s.status()), e.string() + ": empty file");
  EXPECT_FALSE(fs::exists(out_)) << "nothing is written before every input checks out";
}

TEST_F(PrepareTest, MissingInputIsNotFound) {
  absl::StatusOr<PrepareSummary> s =
      PrepareByteCorpus({.out_dir = out_, .inputs = {dir_ / "nope.txt"}});
  EXPECT_EQ(s.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Message(s.status()),
            (dir_ / "nope.txt").string() + ": cannot open: No such file or directory");
}

TEST_F(PrepareTest, UncreatableOutputDirectoryIsAnError) {
  fs::path file = Text("file", "x");
  absl::StatusOr<PrepareSummary> s =
      PrepareByteCorpus({.out_dir = file / "sub", .inputs = {Text("a.txt", "a")}});
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(Message(s.status())
                .rfind((file / "sub").string() + ": cannot create the output directory: ", 0),
            0u)
      << s.status();
}

TEST_F(PrepareTest, RefusesADirectoryThatAlreadyHoldsShards) {
  ASSERT_TRUE(PrepareByteCorpus({.out_dir = out_, .inputs = {Text("a.txt", "abc")}}).ok());
  absl::StatusOr<PrepareSummary> again =
      PrepareByteCorpus({.out_dir = out_, .inputs = {Text("b.txt", "def")}});
  EXPECT_EQ(again.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Message(again.status()).rfind(out_.string() + ": already holds shards (", 0), 0u)
      << again.status();
}

TEST_F(PrepareTest, BadOptionsAreInvalidArgument) {
  fs::path a = Text("a.txt", "abc");
  for (PrepareOptions o : {PrepareOptions{.out_dir = out_, .inputs = {}},
                           PrepareOptions{.out_dir = out_, .inputs = {a}, .val_fraction = 1.0},
                           PrepareOptions{.out_dir = out_, .inputs = {a}, .val_fraction = -0.1},
                           PrepareOptions{.out_dir = out_, .inputs = {a}, .shard_tokens = 0},
                           PrepareOptions{.out_dir = out_, .inputs = {a}, .val_fraction = 0.9}}) {
    EXPECT_EQ(PrepareByteCorpus(o).status().code(), absl::StatusCode::kInvalidArgument)
        << o.val_fraction << " " << o.shard_tokens;
  }
}

}  // namespace
}  // namespace belay::data
