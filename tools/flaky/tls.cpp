#include <flaky/tls.hpp>

#include <boost/asio/buffer.hpp>
#include <boost/asio/ssl/context.hpp>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <stdexcept>

namespace flaky {

namespace {

struct key_free {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct cert_free {
  void operator()(X509* c) const { X509_free(c); }
};
struct bio_free {
  void operator()(BIO* b) const { BIO_free(b); }
};
using key_ptr = std::unique_ptr<EVP_PKEY, key_free>;
using cert_ptr = std::unique_ptr<X509, cert_free>;

void check(bool ok, const char* what) {
  if (!ok) throw std::runtime_error(std::string("flaky: OpenSSL failed to ") + what);
}

key_ptr new_key() {
  key_ptr k(EVP_EC_gen("P-256"));
  check(k != nullptr, "make a key");
  return k;
}

void add_extension(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  check(ext != nullptr, "make an extension");
  X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
}

cert_ptr new_cert(EVP_PKEY* key, const char* cn, long serial, X509* issuer, EVP_PKEY* issuer_key) {
  cert_ptr c(X509_new());
  check(c != nullptr, "make a certificate");
  X509_set_version(c.get(), 2);
  ASN1_INTEGER_set(X509_get_serialNumber(c.get()), serial);
  X509_gmtime_adj(X509_getm_notBefore(c.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(c.get()), 24 * 3600);
  X509_set_pubkey(c.get(), key);
  X509_NAME* name = X509_get_subject_name(c.get());
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("levee tests"), -1, -1, 0);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(cn),
                             -1, -1, 0);
  X509_set_issuer_name(c.get(), issuer ? X509_get_subject_name(issuer) : name);
  X509* signer = issuer ? issuer : c.get();
  if (!issuer) {
    add_extension(c.get(), signer, NID_basic_constraints, "critical,CA:TRUE");
    add_extension(c.get(), signer, NID_key_usage, "critical,keyCertSign,cRLSign");
  }
  add_extension(c.get(), signer, NID_subject_key_identifier, "hash");
  (void)issuer_key;
  return c;
}

std::string pem(X509* c) {
  std::unique_ptr<BIO, bio_free> b(BIO_new(BIO_s_mem()));
  check(PEM_write_bio_X509(b.get(), c) == 1, "write a certificate");
  char* data = nullptr;
  const long n = BIO_get_mem_data(b.get(), &data);
  return std::string(data, static_cast<std::size_t>(n));
}

std::string pem(EVP_PKEY* k) {
  std::unique_ptr<BIO, bio_free> b(BIO_new(BIO_s_mem()));
  check(PEM_write_bio_PrivateKey(b.get(), k, nullptr, nullptr, 0, nullptr, nullptr) == 1,
        "write a key");
  char* data = nullptr;
  const long n = BIO_get_mem_data(b.get(), &data);
  return std::string(data, static_cast<std::size_t>(n));
}

}  // namespace

test_certificates make_test_certificates(const std::vector<std::string>& names) {
  const key_ptr ca_key = new_key();
  const cert_ptr ca = new_cert(ca_key.get(), "levee test CA", 1, nullptr, nullptr);
  check(X509_sign(ca.get(), ca_key.get(), EVP_sha256()) > 0, "sign the CA");

  const key_ptr key = new_key();
  const cert_ptr cert = new_cert(key.get(), "levee test server", 2, ca.get(), ca_key.get());
  std::string san;
  for (const auto& n : names) san += (san.empty() ? "" : ",") + n;
  if (!san.empty()) add_extension(cert.get(), ca.get(), NID_subject_alt_name, san);
  add_extension(cert.get(), ca.get(), NID_authority_key_identifier, "keyid");
  add_extension(cert.get(), ca.get(), NID_ext_key_usage, "serverAuth");
  check(X509_sign(cert.get(), ca_key.get(), EVP_sha256()) > 0, "sign the certificate");
  return {pem(ca.get()), pem(cert.get()), pem(key.get())};
}

std::shared_ptr<boost::asio::ssl::context> make_server_context(const test_certificates& certs) {
  namespace ssl = boost::asio::ssl;
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                   ssl::context::no_sslv3);
  ctx->use_certificate_chain(boost::asio::buffer(certs.cert_pem));
  ctx->use_private_key(boost::asio::buffer(certs.key_pem), ssl::context::pem);
  return ctx;
}

std::shared_ptr<boost::asio::ssl::context> make_client_context(const std::string& ca_pem) {
  namespace ssl = boost::asio::ssl;
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
  ctx->add_certificate_authority(boost::asio::buffer(ca_pem));
  ctx->set_verify_mode(ssl::verify_peer);
  return ctx;
}

}  // namespace flaky
