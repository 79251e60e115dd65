// The breaker hooks levee::fleet uses (breaker/detail/fleet_hook.hpp), on
// virtual time (no Redis): the reason `fleet`, open / close, and the gate on
// OPEN -> HALF_OPEN.
#include "support.hpp"

#include <levee/breaker/detail/fleet_hook.hpp>
#include <levee/breaker/observe.hpp>

#include <catch2/catch.hpp>

#include <memory>
#include <string>
#include <vector>

using namespace levee_test;
using levee::circuit_state;
using levee::transition_reason;

namespace {

asio::awaitable<std::tuple<boost::system::error_code, int>> answer(bool ok) {
  if (ok) co_return std::tuple(boost::system::error_code(), 1);
  co_return std::tuple(make_error_code(boost::system::errc::connection_refused), 0);
}

struct transitions {
  std::vector<levee::breaker_event> seen;
  levee::event_listener listener() {
    return [this](const levee::breaker_event& e) { seen.push_back(e); };
  }
};

}  // namespace

// Issue 22: the link reaches a breaker through its hook only; the public
// breaker has no member that hands out its shared state (a detail:: type).
template <class B>
concept exposes_shared_state = requires(const B& b) {
  b.shared_state();
};
static_assert(!exposes_shared_state<breaker>);
static_assert(!exposes_shared_state<levee::circuit_breaker>);

TEST_CASE("fleet hook: one breaker has one hook and a weak hold does not keep it alive") {
  asio::io_context ioc;
  auto cb = std::make_unique<breaker>(ioc, levee::breaker_options{}, "api");
  breaker other(ioc);
  auto hook = levee::detail::fleet_hook_of(*cb);
  REQUIRE(hook);
  CHECK(hook == levee::detail::fleet_hook_of(*cb));
  CHECK_FALSE(hook == levee::detail::fleet_hook_of(other));
  CHECK(hook.state() == circuit_state::closed);
  CHECK(hook.generation() == 1);
  CHECK(hook.options().window_type == levee::window_kind::time);
  decltype(hook)::weak weak = hook;
  CHECK(weak.lock() == hook);
  hook = {};
  cb.reset();  // no call in flight: the state goes with the breaker
  CHECK(weak.expired());
  CHECK_FALSE(weak.lock());
}

TEST_CASE("fleet hook: the reason's name") {
  CHECK(std::string(levee::to_string(transition_reason::fleet)) == "fleet");
}

TEST_CASE("fleet hook: fleet_open and fleet_close") {
  virtual_time vt;
  asio::io_context ioc;
  breaker cb(ioc, {.minimum_calls = 2, .open_duration = 30s}, "api");
  transitions t;
  cb.listen(levee::transition_events, t.listener());
  auto hook = levee::detail::fleet_hook_of(cb);

  CHECK(hook.open(7s) == 7s);  // CLOSED -> OPEN for the fleet's time
  settle(ioc);
  CHECK(cb.state() == circuit_state::open);
  REQUIRE(t.seen.size() == 1);
  CHECK(t.seen[0].reason == transition_reason::fleet);
  CHECK(t.seen[0].open_for == 7s);
  CHECK(hook.open(7s) == 0s);  // not CLOSED: nothing
  elapse(ioc, 7s);             // its timer, as any opening's
  CHECK(cb.state() == circuit_state::half_open);

  hook.close();  // HALF_OPEN -> CLOSED
  settle(ioc);
  CHECK(cb.state() == circuit_state::closed);
  CHECK(t.seen.back().reason == transition_reason::fleet);
  CHECK(cb.window().calls == 0);
  const auto n = t.seen.size();
  hook.close();  // CLOSED: nothing
  settle(ioc);
  CHECK(t.seen.size() == n);

  CHECK(hook.open(0s) == 30s);  // zero: the breaker's own open duration
  hook.close();                 // OPEN -> CLOSED
  CHECK(cb.state() == circuit_state::closed);
  cb.force_open();
  CHECK(hook.open(1s) == 0s);  // an operator's state is left alone
  hook.close();
  CHECK(cb.state() == circuit_state::forced_open);
}

TEST_CASE("fleet hook: the gate holds OPEN -> HALF_OPEN for the link") {
  virtual_time vt;
  asio::io_context ioc;
  breaker cb(ioc, {.minimum_calls = 2, .open_duration = 30s}, "api");
  auto hook = levee::detail::fleet_hook_of(cb);
  hook.gate(true);
  run(ioc, cb(answer(false)));
  run(ioc, cb(answer(false)));
  REQUIRE(cb.state() == circuit_state::open);
  CHECK_FALSE(hook.open_expired());
  elapse(ioc, 30s);
  CHECK(cb.state() == circuit_state::open);  // the timer fired; the link decides
  CHECK(hook.open_expired());
  const auto generation = hook.generation();
  hook.half_open(generation + 5);  // another generation: nothing
  CHECK(cb.state() == circuit_state::open);
  hook.half_open(generation);
  CHECK(cb.state() == circuit_state::half_open);

  SECTION("ungating applies an expiry the gate held") {
    run(ioc, cb(answer(false)));  // the probe fails: OPEN again
    REQUIRE(cb.state() == circuit_state::open);
    elapse(ioc, 30s);
    CHECK(cb.state() == circuit_state::open);
    hook.gate(false);
    CHECK(cb.state() == circuit_state::half_open);
  }
  SECTION("ungated, the timer acts alone") {
    hook.gate(false);
    run(ioc, cb(answer(false)));
    REQUIRE(cb.state() == circuit_state::open);
    elapse(ioc, 30s);
    CHECK(cb.state() == circuit_state::half_open);
  }
}
