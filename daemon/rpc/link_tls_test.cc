// LinkTls files: made once, private keys, read back the same; refused when others may read
// a key.
#include "daemon/rpc/link_tls.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "common/ckpt/test_dir.h"
#include "gtest/gtest.h"

namespace belay::rpc {
namespace {

namespace fs = std::filesystem;

using LinkTlsTest = ckpt::TempDirTest;  // a fresh directory per test

TEST_F(LinkTlsTest, MadeOnceWithPrivateKeysAndReadBackTheSame) {
  absl::StatusOr<LinkTls> made = LoadOrCreateLinkTls(dir() / "tls");
  ASSERT_TRUE(made.ok()) << made.status();
  EXPECT_NE(made->ca_pem.find("BEGIN CERTIFICATE"), std::string::npos);
  EXPECT_NE(made->cert_pem.find("BEGIN CERTIFICATE"), std::string::npos);
  EXPECT_NE(made->key_pem.find("PRIVATE KEY"), std::string::npos);
  EXPECT_NE(made->ca_pem, made->cert_pem);
  EXPECT_EQ(made->server_name, kLinkServerName);
  EXPECT_EQ(fs::status(dir() / "tls").permissions(), fs::perms::owner_all);
  for (const char* key : {"ca.key", "server.key"}) {
    EXPECT_EQ(fs::status(dir() / "tls" / key).permissions(),
              fs::perms::owner_read | fs::perms::owner_write)
        << key;
  }
  absl::StatusOr<LinkTls> again = LoadOrCreateLinkTls(dir() / "tls");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->ca_pem, made->ca_pem)
      << "a restarted belayd keeps its CA: running ranks still trust it";
  EXPECT_EQ(again->key_pem, made->key_pem);
  // Another state directory: another CA.
  absl::StatusOr<LinkTls> other = LoadOrCreateLinkTls(dir() / "other");
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_NE(other->ca_pem, made->ca_pem);
}

TEST_F(LinkTlsTest, AKeyOthersMayReadIsRefused) {
  ASSERT_TRUE(LoadOrCreateLinkTls(dir() / "tls").ok());
  fs::permissions(dir() / "tls" / "server.key", fs::perms::others_read, fs::perm_options::add);
  absl::StatusOr<LinkTls> t = LoadOrCreateLinkTls(dir() / "tls");
  EXPECT_TRUE(absl::IsFailedPrecondition(t.status())) << t.status();
  EXPECT_NE(t.status().message().find("server.key"), std::string::npos) << t.status();
  absl::StatusOr<LinkTls> given =
      LoadGivenLinkTls(dir() / "tls" / "server.pem", dir() / "tls" / "server.key", "");
  EXPECT_TRUE(absl::IsFailedPrecondition(given.status())) << given.status();
}

TEST_F(LinkTlsTest, GivenCertificatesAreTakenAsTheyAre) {
  ASSERT_TRUE(LoadOrCreateLinkTls(dir() / "tls").ok());
  absl::StatusOr<LinkTls> t = LoadGivenLinkTls(
      dir() / "tls" / "server.pem", dir() / "tls" / "server.key", dir() / "tls" / "ca.pem");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_TRUE(t->server_name.empty()) << "ranks check the host they dial";
  absl::StatusOr<LinkTls> self_signed =
      LoadGivenLinkTls(dir() / "tls" / "server.pem", dir() / "tls" / "server.key", "");
  ASSERT_TRUE(self_signed.ok());
  EXPECT_EQ(self_signed->ca_pem, self_signed->cert_pem);
  EXPECT_FALSE(LoadGivenLinkTls(dir() / "missing.pem", dir() / "tls" / "server.key", "").ok());
}

}  // namespace
}  // namespace belay::rpc
