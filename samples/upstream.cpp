// Three replicas behind one upstream: one answers 503 to everything. It is
// ejected after three failures in a row, every call still succeeds (a
// failure is retried at once on another replica), and the Prometheus text
// shows the ejection. docs/upstream.md explains the rules.
#include <levee/http.hpp>
#include <levee/upstream/http.hpp>

#include <boost/asio.hpp>

#include <flaky/server.hpp>

#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace asio = boost::asio;
using namespace std::chrono_literals;

flaky::phase phase(const char* spec) {
  std::string error;
  return *flaky::parse_phase(spec, error);
}

asio::awaitable<void> session(asio::io_context& ioc, levee::upstream& api,
                              levee::http::client& client) {
  int ok = 0;
  for (int i = 0; i < 100; ++i) {
    auto [ec, res] = co_await levee::http::async_upstream_get(api, client, "/items/42",
                                                              asio::as_tuple(asio::use_awaitable));
    ok += !ec && res.result_int() == 200;
  }
  std::cout << ok << " of 100 calls succeeded\n";
  for (const auto& e : api.metrics().endpoints)
    std::cout << e.address << ": " << (e.ejected ? "ejected" : "in service") << ", "
              << e.breaker.successes + e.breaker.failures << " calls\n";
  ioc.stop();  // the replicas would serve for ever
}

int main() {
  asio::io_context ioc;
  flaky::server healthy1(ioc.get_executor(), {phase("ok 1h")});
  flaky::server sick(ioc.get_executor(), {phase("sick 1h errors=1 status=503")});
  flaky::server healthy2(ioc.get_executor(), {phase("ok 1h")});
  std::vector<std::string> origins;
  for (auto* s : {&healthy1, &sick, &healthy2})
    origins.push_back("http://127.0.0.1:" + std::to_string(s->start()));

  levee::upstream_options options = levee::http::upstream_defaults();
  options.outlier.consecutive_failures = 3;
  levee::upstream api(ioc, origins, options, "api");
  api.listen([](const levee::upstream_event& e) {
    std::cout << e.address << " " << levee::to_string(e.kind) << "\n";
  });
  levee::http::client client(ioc.get_executor());
  asio::co_spawn(ioc, session(ioc, api, client), asio::detached);
  ioc.run();

  std::ostringstream text;
  levee::write_prometheus(text, {api.metrics()});
  std::string line;
  std::istringstream in(text.str());
  while (std::getline(in, line))
    if (line.starts_with("levee_upstream_ejections_total")) std::cout << line << "\n";
}
