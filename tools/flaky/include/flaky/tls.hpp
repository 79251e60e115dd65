// Certificates made at test time: a CA and a server certificate it signed,
// for the flaky upstream, nginx in the tests, and the HTTPS benchmarks.
#pragma once

#include <memory>
#include <string>
#include <vector>

namespace boost::asio::ssl {
class context;
}  // namespace boost::asio::ssl

namespace flaky {

/// PEM texts of a throwaway CA and of a server certificate it signed.
struct test_certificates {
  std::string ca_pem;    ///< the CA's certificate: what a client trusts
  std::string cert_pem;  ///< the server's certificate
  std::string key_pem;   ///< the server's private key
};

/// A new CA (EC P-256, one day) and a server certificate naming `names` in
/// its subjectAltName: "DNS:localhost", "IP:127.0.0.1", ... Throws
/// `std::runtime_error` when OpenSSL fails.
test_certificates make_test_certificates(const std::vector<std::string>& names);

/// A TLS server context presenting `certs`' certificate and key.
std::shared_ptr<boost::asio::ssl::context> make_server_context(const test_certificates& certs);

/// A TLS client context that trusts only `ca_pem` and verifies peers.
std::shared_ptr<boost::asio::ssl::context> make_client_context(const std::string& ca_pem);

}  // namespace flaky
