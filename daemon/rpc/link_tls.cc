// LinkTls: a CA and a server certificate made with OpenSSL, kept in the state directory.
#include "daemon/rpc/link_tls.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "absl/strings/str_format.h"
#include "common/durable_file.h"
#include "common/strings.h"
#include "openssl/bio.h"
#include "openssl/bn.h"
#include "openssl/evp.h"
#include "openssl/pem.h"
#include "openssl/rand.h"
#include "openssl/x509.h"
#include "openssl/x509v3.h"

namespace belay::rpc {
namespace {

namespace fs = std::filesystem;

struct Free {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
  void operator()(X509* p) const { X509_free(p); }
  void operator()(BIO* p) const { BIO_free(p); }
  void operator()(BIGNUM* p) const { BN_free(p); }
  void operator()(X509_EXTENSION* p) const { X509_EXTENSION_free(p); }
};
using Key = std::unique_ptr<EVP_PKEY, Free>;
using Cert = std::unique_ptr<X509, Free>;

absl::Status OpenSslError(std::string_view what) {
  return absl::InternalError(Cat("cannot make the worker link's certificates: ", what));
}

template <typename Write>
std::string Pem(Write write) {
  std::unique_ptr<BIO, Free> bio(BIO_new(BIO_s_mem()));
  if (!bio || write(bio.get()) != 1) return "";
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  return n > 0 ? std::string(data, static_cast<size_t>(n)) : "";
}

absl::Status AddExtension(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  std::unique_ptr<X509_EXTENSION, Free> ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value));
  if (!ext || X509_add_ext(cert, ext.get(), -1) != 1) return OpenSslError(Cat("extension ", value));
  return absl::OkStatus();
}

// A certificate for `key` named `cn`, signed by `issuer_key` (with `issuer` as issuer; null:
// self-signed), with `extensions` (nid, value).
absl::StatusOr<Cert> Issue(EVP_PKEY* key, const std::string& cn, X509* issuer, EVP_PKEY* issuer_key,
                           std::initializer_list<std::pair<int, const char*>> extensions) {
  Cert cert(X509_new());
  if (!cert || X509_set_version(cert.get(), 2) != 1) return OpenSslError("X509_new");
  unsigned char serial[16];
  if (RAND_bytes(serial, sizeof serial) != 1) return OpenSslError("RAND_bytes");
  serial[0] &= 0x7f;  // positive
  std::unique_ptr<BIGNUM, Free> bn(BN_bin2bn(serial, sizeof serial, nullptr));
  if (!bn || BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(cert.get())) == nullptr)
    return OpenSslError("serial");
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 10L * 365 * 24 * 3600);
  X509_NAME* name = X509_get_subject_name(cert.get());
  if (X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1,
                                 0) != 1 ||
      X509_set_issuer_name(cert.get(), issuer != nullptr ? X509_get_subject_name(issuer) : name) !=
          1 ||
      X509_set_pubkey(cert.get(), key) != 1) {
    return OpenSslError("subject");
  }
  for (const auto& [nid, value] : extensions) {
    if (absl::Status s =
            AddExtension(cert.get(), issuer != nullptr ? issuer : cert.get(), nid, value);
        !s.ok()) {
      return s;
    }
  }
  if (X509_sign(cert.get(), issuer_key, EVP_sha256()) <= 0) return OpenSslError("X509_sign");
  return cert;
}

// A private file of belayd's user, read whole; `expect_private` also refuses one others may
// read or write.
absl::StatusOr<std::string> ReadOwnFile(const fs::path& file, bool expect_private) {
  const int fd = ::open(file.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return absl::FailedPreconditionError(Cat(file.string(), ": ", std::strerror(errno)));
  struct stat st {};
  std::string out;
  bool ok = ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size < (1 << 20);
  if (ok) {
    out.resize(static_cast<size_t>(st.st_size));
    ok = ::read(fd, out.data(), out.size()) == static_cast<ssize_t>(out.size());
  }
  ::close(fd);
  if (!ok)
    return absl::FailedPreconditionError(
        Cat(file.string(), ": not a readable regular file under 1 MiB"));
  if (expect_private && (st.st_uid != ::geteuid() || (st.st_mode & 077) != 0)) {
    return absl::FailedPreconditionError(
        Cat(file.string(), ": a private key must be belayd's own file (uid ", ::geteuid(),
            ") that no one else may read or write; it is mode ",
            absl::StrFormat("%04o", st.st_mode & 07777), ", uid ", st.st_uid));
  }
  return out;
}

absl::Status WriteFile(const fs::path& file, const std::string& contents, uint32_t mode) {
  absl::StatusOr<AtomicFile> f = AtomicFile::Create(file, {.hidden_temp_name = true, .mode = mode});
  if (!f.ok()) return f.status();
  if (absl::Status s = f->Append(contents); !s.ok()) return s;
  return f->Commit();
}

absl::Status Create(const fs::path& dir) {
  Key ca_key(EVP_EC_gen("P-256"));
  Key server_key(EVP_EC_gen("P-256"));
  if (!ca_key || !server_key) return OpenSslError("EC key generation");
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  absl::StatusOr<Cert> ca =
      Issue(ca_key.get(), Cat("belayd worker link CA (", host, ")"), nullptr, ca_key.get(),
            {{NID_basic_constraints, "critical,CA:TRUE,pathlen:0"},
             {NID_key_usage, "critical,keyCertSign,cRLSign"},
             {NID_subject_key_identifier, "hash"}});
  if (!ca.ok()) return ca.status();
  absl::StatusOr<Cert> server = Issue(server_key.get(), kLinkServerName, ca->get(), ca_key.get(),
                                      {{NID_basic_constraints, "critical,CA:FALSE"},
                                       {NID_key_usage, "critical,digitalSignature"},
                                       {NID_ext_key_usage, "serverAuth"},
                                       {NID_subject_alt_name, "DNS:belayd"},
                                       {NID_authority_key_identifier, "keyid:always"}});
  if (!server.ok()) return server.status();
  auto key_pem = [](EVP_PKEY* k) {
    return Pem([k](BIO* b) {
      return PEM_write_bio_PrivateKey(b, k, nullptr, nullptr, 0, nullptr, nullptr);
    });
  };
  auto cert_pem = [](X509* c) { return Pem([c](BIO* b) { return PEM_write_bio_X509(b, c); }); };
  // Keys first, certificates last: server.pem present means the set is complete.
  for (const auto& [name, contents, mode] :
       {std::tuple{"ca.key", key_pem(ca_key.get()), 0600u},
        std::tuple{"server.key", key_pem(server_key.get()), 0600u},
        std::tuple{"ca.pem", cert_pem(ca->get()), 0644u},
        std::tuple{"server.pem", cert_pem(server->get()), 0644u}}) {
    if (contents.empty()) return OpenSslError(Cat("PEM of ", name));
    if (absl::Status s = WriteFile(dir / name, contents, mode); !s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<LinkTls> LoadOrCreateLinkTls(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (!ec) fs::permissions(dir, fs::perms::owner_all, fs::perm_options::replace, ec);
  if (ec) return absl::InternalError(Cat(dir.string(), ": ", ec.message()));
  if (!fs::exists(dir / "server.pem", ec)) {
    if (absl::Status s = Create(dir); !s.ok()) return s;
  }
  LinkTls t;
  t.server_name = kLinkServerName;
  absl::StatusOr<std::string> ca = ReadOwnFile(dir / "ca.pem", false);
  absl::StatusOr<std::string> cert = ReadOwnFile(dir / "server.pem", false);
  absl::StatusOr<std::string> key = ReadOwnFile(dir / "server.key", true);
  for (const auto* r : {&ca, &cert, &key}) {
    if (!r->ok()) return r->status();
  }
  t.ca_pem = *std::move(ca);
  t.cert_pem = *std::move(cert);
  t.key_pem = *std::move(key);
  return t;
}

absl::StatusOr<LinkTls> LoadGivenLinkTls(const fs::path& cert, const fs::path& key,
                                         const fs::path& ca) {
  LinkTls t;
  absl::StatusOr<std::string> c = ReadOwnFile(cert, false);
  if (!c.ok()) return c.status();
  absl::StatusOr<std::string> k = ReadOwnFile(key, true);
  if (!k.ok()) return k.status();
  absl::StatusOr<std::string> a = ca.empty() ? c : ReadOwnFile(ca, false);
  if (!a.ok()) return a.status();
  t.cert_pem = *std::move(c);
  t.key_pem = *std::move(k);
  t.ca_pem = *std::move(a);
  return t;
}

}  // namespace belay::rpc
