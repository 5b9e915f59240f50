// AttemptTokens: derivation, digests, and the key file's checks.
#include "daemon/supervisor/attempt_tokens.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include "common/ckpt/test_dir.h"
#include "gtest/gtest.h"

namespace belay::supervisor {
namespace {

namespace fs = std::filesystem;

using AttemptTokensTest = ckpt::TempDirTest;  // a fresh directory per test

TEST(AttemptTokens, TokenDependsOnKeyCampaignAttemptAndNonce) {
  const AttemptTokens t(std::string(32, 'a'));
  const std::string base = t.Token("tiny-1", 3, "00ff");
  EXPECT_EQ(base.size(), 64u);
  EXPECT_EQ(base.find_first_not_of("0123456789abcdef"), std::string::npos);
  EXPECT_EQ(t.Token("tiny-1", 3, "00ff"), base) << "derivation is deterministic";
  std::set<std::string> seen = {base, t.Token("tiny-2", 3, "00ff"), t.Token("tiny-1", 4, "00ff"),
                                t.Token("tiny-1", 3, "00fe"),
                                // Field boundaries are part of the message: no shifting of bytes
                                // between fields gives the same token.
                                t.Token("tiny-13", 3, "00ff"), t.Token("tiny-1", 33, "00ff"),
                                AttemptTokens(std::string(32, 'b')).Token("tiny-1", 3, "00ff")};
  EXPECT_EQ(seen.size(), 7u);
}

TEST(AttemptTokens, DigestsAreKeyedAndComparedWhole) {
  const AttemptTokens t(std::string(32, 'a'));
  const std::string token = t.Token("c", 1, "n");
  EXPECT_EQ(t.Digest(token).size(), 32u);
  EXPECT_EQ(t.Digest(token), t.Digest(token));
  EXPECT_NE(t.Digest(token), AttemptTokens(std::string(32, 'b')).Digest(token));
  EXPECT_NE(t.Digest(token), t.Digest(token.substr(0, 63)));
  DigestEqual eq;
  const std::string d = t.Digest(token);
  EXPECT_TRUE(eq(d, d));
  std::string flipped = d;
  flipped.back() ^= 1;
  EXPECT_FALSE(eq(d, flipped));
  EXPECT_FALSE(eq(d, d.substr(0, 31)));
}

TEST(AttemptTokens, NoncesAreFreshHex) {
  std::set<std::string> nonces;
  for (int i = 0; i < 100; ++i) nonces.insert(AttemptTokens::NewNonce());
  EXPECT_EQ(nonces.size(), 100u);
  EXPECT_EQ(nonces.begin()->size(), 32u);
  EXPECT_NE(AttemptTokens::RandomKey(), AttemptTokens::RandomKey());
}

TEST_F(AttemptTokensTest, KeyFileIsCreatedPrivateAndReadBack) {
  const fs::path file = dir() / "token.key";
  absl::StatusOr<std::string> key = AttemptTokens::LoadOrCreateKey(file);
  ASSERT_TRUE(key.ok()) << key.status();
  EXPECT_EQ(key->size(), AttemptTokens::kKeyBytes);
  struct stat st {};
  ASSERT_EQ(::stat(file.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  absl::StatusOr<std::string> again = AttemptTokens::LoadOrCreateKey(file);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(*again, *key) << "a restarted belayd derives the same tokens";
}

TEST_F(AttemptTokensTest, KeyOthersMayReadIsRefused) {
  const fs::path file = dir() / "token.key";
  ASSERT_TRUE(AttemptTokens::LoadOrCreateKey(file).ok());
  fs::permissions(file, fs::perms::others_read, fs::perm_options::add);
  absl::StatusOr<std::string> key = AttemptTokens::LoadOrCreateKey(file);
  EXPECT_TRUE(absl::IsFailedPrecondition(key.status())) << key.status();
  EXPECT_NE(key.status().message().find("token.key"), std::string::npos);
}

TEST_F(AttemptTokensTest, KeyThroughASymlinkOrOfTheWrongSizeIsRefused) {
  const fs::path real = dir() / "real.key";
  ASSERT_TRUE(AttemptTokens::LoadOrCreateKey(real).ok());
  fs::create_symlink(real, dir() / "link.key");
  EXPECT_FALSE(AttemptTokens::LoadOrCreateKey(dir() / "link.key").ok());
  const fs::path short_key = dir() / "short.key";
  { std::ofstream(short_key) << "0123"; }
  fs::permissions(short_key, fs::perms::owner_read | fs::perms::owner_write,
                  fs::perm_options::replace);
  absl::StatusOr<std::string> key = AttemptTokens::LoadOrCreateKey(short_key);
  EXPECT_TRUE(absl::IsFailedPrecondition(key.status())) << key.status();
}

}  // namespace
}  // namespace belay::supervisor
