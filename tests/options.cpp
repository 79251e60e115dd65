#include <levee/breaker/options.hpp>

#include <levee/breaker/circuit_breaker.hpp>

#include <boost/asio/io_context.hpp>
#include <catch2/catch.hpp>

#include <functional>
#include <string>

using namespace std::chrono_literals;

TEST_CASE("defaults are the seed scenario's") {
  const levee::breaker_options o;
  CHECK(o.failure_rate_threshold == 0.5);
  CHECK(o.window == 10s);
  CHECK(o.open_duration == 30s);
  CHECK(o.half_open_probes == 1);
  CHECK(o.successes_to_close == 1);
  CHECK(o.minimum_calls == 10);
  CHECK(o.consecutive_failures == 0);
  CHECK(o.slow_call_duration == 0s);
  CHECK(o.window_type == levee::window_kind::time);
  CHECK(o.max_half_open_duration == 60s);
  CHECK(o.probe_timeout == 0s);  // automatic
  CHECK_NOTHROW(levee::validate(o));
}

TEST_CASE("probe_timeout: zero (automatic), any positive duration and max() are valid") {
  for (const auto d :
       {std::chrono::nanoseconds::zero(), std::chrono::nanoseconds(1),
        std::chrono::nanoseconds(std::chrono::seconds(1)), std::chrono::nanoseconds::max()}) {
    levee::breaker_options o;
    o.probe_timeout = d;
    CHECK_NOTHROW(levee::validate(o));
  }
}

TEST_CASE("designated initialisers and any chrono duration compile") {
  const levee::breaker_options o{.window = 5s, .open_duration = 200ms, .successes_to_close = 2};
  CHECK(o.window == 5s);
  CHECK(o.open_duration == 200ms);
  CHECK_NOTHROW(levee::validate(o));
}

namespace {
void expect_rejected(const std::function<void(levee::breaker_options&)>& edit,
                     const std::string& member) {
  levee::breaker_options o;
  edit(o);
  INFO("member " << member);
  try {
    levee::validate(o);
    FAIL("accepted an invalid " << member);
  } catch (const std::invalid_argument& e) {
    CHECK(std::string(e.what()).rfind("breaker_options::" + member + " ", 0) == 0);
  }
  // The breaker's constructor refuses it too.
  boost::asio::io_context ioc;
  CHECK_THROWS_AS(levee::circuit_breaker(ioc, o), std::invalid_argument);
}
}  // namespace

TEST_CASE("every invalid option is refused by name") {
  using O = levee::breaker_options;
  expect_rejected([](O& o) { o.failure_rate_threshold = 0; }, "failure_rate_threshold");
  expect_rejected([](O& o) { o.failure_rate_threshold = 1.01; }, "failure_rate_threshold");
  expect_rejected([](O& o) { o.failure_rate_threshold = -0.5; }, "failure_rate_threshold");
  expect_rejected([](O& o) { o.failure_rate_threshold = std::nan(""); }, "failure_rate_threshold");
  expect_rejected([](O& o) { o.window = 0s; }, "window");
  expect_rejected([](O& o) { o.window = -1s; }, "window");
  expect_rejected([](O& o) { o.window_buckets = 0; }, "window_buckets");
  expect_rejected([](O& o) { o.window_buckets = 1025; }, "window_buckets");
  expect_rejected(
      [](O& o) {
        o.window = 5ns;
        o.window_buckets = 10;
      },
      "window_buckets");
  expect_rejected([](O& o) { o.window_type = static_cast<levee::window_kind>(7); }, "window_type");
  expect_rejected([](O& o) { o.window_calls = 0; }, "window_calls");
  expect_rejected([](O& o) { o.window_calls = (1u << 20) + 1; }, "window_calls");
  expect_rejected([](O& o) { o.minimum_calls = 0; }, "minimum_calls");
  expect_rejected(
      [](O& o) {
        o.window_type = levee::window_kind::count;
        o.window_calls = 5;
        o.minimum_calls = 6;
      },
      "minimum_calls");
  expect_rejected([](O& o) { o.open_duration = 0s; }, "open_duration");
  expect_rejected([](O& o) { o.half_open_probes = 0; }, "half_open_probes");
  expect_rejected([](O& o) { o.max_half_open_duration = 0s; }, "max_half_open_duration");
  expect_rejected([](O& o) { o.max_half_open_duration = -1s; }, "max_half_open_duration");
  expect_rejected([](O& o) { o.half_open_probes = 8192; }, "half_open_probes");
  expect_rejected([](O& o) { o.successes_to_close = 0; }, "successes_to_close");
  // Issue 18, item 5: more than the core's 32-bit count could ever reach.
  expect_rejected([](O& o) { o.successes_to_close = std::size_t{1} << 32; }, "successes_to_close");
  CHECK_NOTHROW(levee::validate(O{.successes_to_close = 0xffff'ffffu}));
  expect_rejected([](O& o) { o.slow_call_duration = -1ms; }, "slow_call_duration");
  expect_rejected([](O& o) { o.probe_timeout = -1ns; }, "probe_timeout");
  expect_rejected([](O& o) { o.probe_timeout = std::chrono::nanoseconds::min(); }, "probe_timeout");
  expect_rejected([](O& o) { o.open_duration_multiplier = 0.5; }, "open_duration_multiplier");
  expect_rejected(
      [](O& o) {
        o.open_duration_multiplier = 2;
        o.max_open_duration = 1s;
      },
      "max_open_duration");
  expect_rejected([](O& o) { o.open_duration_jitter = 1; }, "open_duration_jitter");
  expect_rejected([](O& o) { o.open_duration_jitter = -0.1; }, "open_duration_jitter");
  expect_rejected([](O& o) { o.slow_call_rate_threshold = 0; }, "slow_call_rate_threshold");
  expect_rejected([](O& o) { o.slow_call_rate_threshold = 2; }, "slow_call_rate_threshold");
}

TEST_CASE("the message says what is wrong") {
  levee::breaker_options o;
  o.window = 0s;
  CHECK_THROWS_WITH(levee::validate(o), "breaker_options::window must be greater than zero");
}
