// The registry's reconfiguration: defaults, per-key and per-pattern options,
// changed while its breakers run, without losing their windows.
#include <levee/registry/registry.hpp>

#include "support.hpp"

using namespace levee_test;
using levee::circuit_state;

namespace {

using registry = levee::basic_breaker_registry<vclock>;

asio::awaitable<std::tuple<boost::system::error_code, int>> outcome(bool ok) {
  if (ok) co_return std::tuple(boost::system::error_code{}, 0);
  co_return std::tuple(make_error_code(boost::system::errc::connection_reset), 0);
}

// `failures` failed calls then `successes` good ones through `key`'s breaker.
void calls(asio::io_context& ioc, registry& r, const std::string& key, int failures,
           int successes) {
  for (int i = 0; i < failures; ++i) run(ioc, (*r.get(key))(outcome(false)));
  for (int i = 0; i < successes; ++i) run(ioc, (*r.get(key))(outcome(true)));
}

}  // namespace

TEST_CASE("registry reconfigure: set_options changes a running breaker in place, window kept") {
  virtual_time vt;
  asio::io_context ioc;
  registry r(ioc, {.defaults = {.failure_rate_threshold = 0.5, .minimum_calls = 10}});
  const auto before = r.get("api:80");
  calls(ioc, r, "api:80", 4, 4);  // 8 calls, 50 %: below minimum_calls
  CHECK(before->state() == circuit_state::closed);

  r.set_options("api:80", {.failure_rate_threshold = 0.4, .minimum_calls = 8});
  const auto after = r.get("api:80");
  CHECK(after == before);  // the same breaker
  CHECK(after->options().minimum_calls == 8);
  CHECK(after->metrics().window_calls == 8);  // what it knew is still there
  calls(ioc, r, "api:80", 1, 0);              // 5 of 9 failed, >= 40 %
  CHECK(after->state() == circuit_state::open);
  settle(ioc);
}
