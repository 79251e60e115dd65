// levee::config: a registry's options from a JSON document.
#include <levee/config/config.hpp>
#include <levee/registry/registry.hpp>

#include "../samples/demo/config_reload.hpp"

#include "support.hpp"

#include <csignal>
#include <cstdio>
#include <sstream>

#include <unistd.h>
#include <fstream>

using namespace levee_test;
using Catch::Matchers::Contains;
using levee::circuit_state;

namespace {

std::vector<std::string> errors_of(std::string_view doc) {
  try {
    levee::parse_registry_config(doc);
  } catch (const levee::config_error& e) {
    return e.errors();
  }
  return {};
}

using registry = levee::basic_breaker_registry<vclock>;

asio::awaitable<std::tuple<boost::system::error_code, int>> outcome(bool ok) {
  if (ok) co_return std::tuple(boost::system::error_code{}, 0);
  co_return std::tuple(make_error_code(boost::system::errc::connection_reset), 0);
}

void calls(asio::io_context& ioc, registry& r, const std::string& key, int failures,
           int successes) {
  for (int i = 0; i < failures; ++i) run(ioc, (*r.get(key))(outcome(false)));
  for (int i = 0; i < successes; ++i) run(ioc, (*r.get(key))(outcome(true)));
}

// A file of the test's own, removed at the end.
struct temp_file {
  std::string path = "levee-test-config-" + std::to_string(::getpid()) + ".json";
  void write(std::string_view text) const { std::ofstream(path, std::ios::trunc) << text; }
  ~temp_file() { std::remove(path.c_str()); }
};

constexpr std::string_view before_doc = R"({
  "defaults": {"failure_rate_threshold": 0.5, "minimum_calls": 10},
  "endpoints": {"*.payments.internal:*": {"minimum_calls": 20}}
})";
constexpr std::string_view after_doc = R"({
  "defaults": {"failure_rate_threshold": 0.4, "minimum_calls": 8},
  "endpoints": {"*.payments.internal:*": {"minimum_calls": 20}}
})";

}  // namespace

TEST_CASE("config: every member by its C++ name, durations with their units") {
  const auto o = levee::parse_registry_config(R"({
    "idle_timeout": "5m", "max_breakers": 77,
    "defaults": {
      "failure_rate_threshold": 0.25, "window": "20s", "window_buckets": 20,
      "window_type": "count", "window_calls": 50, "minimum_calls": 5,
      "open_duration": "250ms", "open_duration_multiplier": 2, "max_open_duration": "1h",
      "open_duration_jitter": 0.1, "jitter_seed": 42, "recovery_window": "500us",
      "half_open_probes": 3, "successes_to_close": 2, "max_half_open_duration": "max",
      "consecutive_failures": 4, "slow_call_duration": "100ns",
      "slow_call_rate_threshold": 0.75, "probe_timeout": "2s",
      "limit": {
        "algorithm": "aimd", "initial_limit": 30, "min_limit": 10, "max_limit": 100,
        "smoothing": 0.5, "rtt_tolerance": 1.5, "long_window": 100, "queue_size": 2,
        "sample_window": "2s", "min_window_samples": 5, "backoff_ratio": 0.8,
        "aimd_timeout": "3s", "max_queue": 8, "max_wait": "10ms"
      }
    }
  })");
  using namespace std::chrono;
  CHECK(o.idle_timeout == 5min);
  CHECK(o.max_breakers == 77);
  const auto& d = o.defaults;
  CHECK(d.failure_rate_threshold == 0.25);
  CHECK(d.window == 20s);
  CHECK(d.window_buckets == 20);
  CHECK(d.window_type == levee::window_kind::count);
  CHECK(d.window_calls == 50);
  CHECK(d.minimum_calls == 5);
  CHECK(d.open_duration == 250ms);
  CHECK(d.open_duration_multiplier == 2.0);
  CHECK(d.max_open_duration == 1h);
  CHECK(d.open_duration_jitter == 0.1);
  CHECK(d.jitter_seed == 42);
  CHECK(d.recovery_window == 500us);
  CHECK(d.half_open_probes == 3);
  CHECK(d.successes_to_close == 2);
  CHECK(d.max_half_open_duration == nanoseconds::max());
  CHECK(d.consecutive_failures == 4);
  CHECK(d.slow_call_duration == 100ns);
  CHECK(d.slow_call_rate_threshold == 0.75);
  CHECK(d.probe_timeout == 2s);
  REQUIRE(o.limits);
  const auto& l = *o.limits;
  CHECK(l.algorithm == levee::limit_algorithm::aimd);
  CHECK(l.initial_limit == 30);
  CHECK(l.min_limit == 10);
  CHECK(l.max_limit == 100);
  CHECK(l.smoothing == 0.5);
  CHECK(l.rtt_tolerance == 1.5);
  CHECK(l.long_window == 100);
  CHECK(l.queue_size == 2.0);
  CHECK(l.sample_window == 2s);
  CHECK(l.min_window_samples == 5);
  CHECK(l.backoff_ratio == 0.8);
  CHECK(l.aimd_timeout == 3s);
  CHECK(l.max_queue == 8);
  CHECK(l.max_wait == 10ms);
  CHECK(o.overrides.empty());
}

TEST_CASE("config: what the document does not say comes from the base, endpoints from defaults") {
  levee::registry_options base;
  base.defaults.minimum_calls = 3;
  base.defaults.classifier = [](const levee::call_result&) { return levee::outcome::failure; };
  base.max_breakers = 9;
  const auto o = levee::parse_registry_config(R"({
    // comments are allowed
    "defaults": {"open_duration": "1m"},
    "endpoints": {
      "api.example.com:443": {"failure_rate_threshold": 0.2},
      "*.payments.internal:*": {"open_duration": "2m", "limit": {"max_limit": 50}},
    }
  })",
                                              base);
  CHECK(o.max_breakers == 9);
  CHECK(o.defaults.minimum_calls == 3);
  CHECK(o.defaults.open_duration == std::chrono::minutes(1));
  CHECK(o.defaults.classifier);  // kept: no document names a function
  CHECK_FALSE(o.limits);
  REQUIRE(o.overrides.size() == 2);
  const auto& api = o.overrides.at("api.example.com:443");
  CHECK(api.breaker.failure_rate_threshold == 0.2);
  CHECK(api.breaker.open_duration == std::chrono::minutes(1));  // the document's defaults
  CHECK(api.breaker.minimum_calls == 3);                        // the base's
  CHECK(api.breaker.classifier);
  CHECK_FALSE(api.limit);
  const auto& pay = o.overrides.at("*.payments.internal:*");
  CHECK(pay.breaker.open_duration == std::chrono::minutes(2));
  REQUIRE(pay.limit);
  CHECK(pay.limit->max_limit == 50);
  CHECK(pay.limit->min_limit == levee::adaptive_limit_options{}.min_limit);
  // "limit": null in the defaults: no limits, whatever the base had.
  base.limits = levee::adaptive_limit_options{};
  CHECK_FALSE(levee::parse_registry_config(R"({"defaults": {"limit": null}})", base).limits);
  CHECK(levee::parse_registry_config(R"({})", base).limits);
}

TEST_CASE("config: every error, each by its path, with validate's rules") {
  const auto errors = errors_of(R"({
    "max_breakers": 0,
    "defaults": {"window": "10 s", "minimum_calls": -1, "failur_rate_threshold": 0.5,
                 "limit": {"max_limit": 1, "smoothing": 2, "classifier": 1}},
    "endpoints": {
      "api.example.com": {"failure_rate_threshold": 1.5, "open_duration": "0s"},
      "b\"q": {"window_type": "sliding", "limit": null},
      "c": 3
    },
    "extra": true
  })");
  const std::vector<std::string> expected = {
      "extra: unknown name",
      "max_breakers: must be at least 1",
      R"(defaults.window: must be a duration: an integer and a unit (ns, us, ms, s, m, h), such as "30s" or "250ms", or "max")",
      "defaults.minimum_calls: must be an integer, 0 or more",
      "defaults.failur_rate_threshold: unknown name",
      "defaults.limit.classifier: is a function: set it in code (the base options), not in a file",
      "defaults.limit.max_limit: must be at least min_limit",
      "defaults.limit.smoothing: must be in (0, 1]",
      R"(endpoints["api.example.com"].failure_rate_threshold: must be in (0, 1])",
      R"(endpoints["api.example.com"].open_duration: must be greater than zero)",
      R"(endpoints["b\"q"].window_type: must be "time" or "count")",
      R"(endpoints["b\"q"].limit: must be an object)",
      R"(endpoints["c"]: must be an object)",
  };
  CHECK(errors == expected);
}

TEST_CASE("config: durations, their overflow refused by name") {
  using namespace std::chrono;
  auto open = [](const std::string& d) {
    return levee::parse_registry_config(R"({"defaults": {"open_duration": ")" + d + R"("}})")
        .defaults.open_duration;
  };
  CHECK(open("30s") == 30s);
  CHECK(open("250ms") == 250ms);
  CHECK(open("1m") == 1min);
  CHECK(open("2h") == 2h);
  CHECK(open("500us") == 500us);
  CHECK(open("100ns") == 100ns);
  CHECK(open("9223372036854775807ns") == nanoseconds::max());
  CHECK(open("9223372036s") == 9223372036s);
  const std::string too_long =
      "must not exceed nanoseconds::max() (292 years: write \"max\" for no limit)";
  for (const char* d : {"9223372036854775808ns", "9223372037s", "99999999999999999999999h"}) {
    INFO(d);
    CHECK(errors_of(std::string(R"({"defaults": {"open_duration": ")") + d + "\"}}") ==
          std::vector<std::string>{"defaults.open_duration: " + too_long});
  }
  for (const char* d : {"", "s", "1", "1.5s", "-1s", "1 s", "1sec", "1S", "maximum"}) {
    INFO(d);
    CHECK(errors_of(std::string(R"({"defaults": {"open_duration": ")") + d + "\"}}").size() == 1);
  }
  CHECK(errors_of(R"({"defaults": {"open_duration": 30}})").size() == 1);
}

TEST_CASE("config: a document that is not JSON is refused with its line and column") {
  const auto e = errors_of("{\n  \"defaults\": {\n    \"window\": \"10s\",,\n  }\n}");
  REQUIRE(e.size() == 1);
  CHECK_THAT(e[0], Contains("line 3, column"));
  CHECK(errors_of("[1, 2]") == std::vector<std::string>{"document: must be an object"});
  CHECK(errors_of("").size() == 1);
  CHECK_THROWS_AS(levee::read_registry_config("/nonexistent/levee.json"), levee::config_error);
  CHECK_THROWS_AS(levee::read_registry_config("/nonexistent/levee.json"), std::invalid_argument);
}

TEST_CASE("config: the sample file (samples/levee.json) loads") {
  const auto o = levee::read_registry_config(LEVEE_SAMPLE_CONFIG);
  CHECK_FALSE(o.overrides.empty());
  levee::validate(o);
}

TEST_CASE("config: a reload mid-run opens the breaker under the new threshold, window kept") {
  virtual_time vt;
  asio::io_context ioc;
  const levee::registry_options base{.defaults = {.window = 60s}};
  registry r(ioc, levee::parse_registry_config(before_doc, base));
  calls(ioc, r, "api:80", 3, 5);  // 8 calls, under minimum_calls 10
  vclock::advance(10s);
  calls(ioc, r, "api:80", 0, 1);  // 9 calls, 33 %
  const auto api = r.get("api:80");
  CHECK(api->state() == circuit_state::closed);
  const auto before = api->metrics();

  r.reconfigure(levee::parse_registry_config(after_doc, base));
  CHECK(r.get("api:80") == api);
  CHECK(api->options().failure_rate_threshold == 0.4);
  CHECK(api->options().window == 60s);  // from the base: the document does not say
  CHECK(api->metrics().window_calls == before.window_calls);
  CHECK(api->metrics().window_failures == before.window_failures);
  CHECK(api->state() == circuit_state::closed);
  calls(ioc, r, "api:80", 1, 0);  // 10 calls, 4 failed: 40 % >= 0.4, under the new rule only
  CHECK(api->state() == circuit_state::open);
  // Under the old document the same calls leave it closed (0.4 < 0.5).
  registry old(ioc, levee::parse_registry_config(before_doc, base));
  calls(ioc, old, "api:80", 4, 6);
  CHECK(old.get("api:80")->state() == circuit_state::closed);
  settle(ioc);
}

TEST_CASE("config: a bad document changes nothing") {
  virtual_time vt;
  asio::io_context ioc;
  registry r(ioc, levee::parse_registry_config(before_doc));
  calls(ioc, r, "api:80", 2, 2);
  const auto api = r.get("api:80");
  std::vector<std::string> errors;
  try {
    r.reconfigure(levee::parse_registry_config(
        R"({"defaults": {"failure_rate_threshold": 0.1, "minimum_calls": 0}})"));
  } catch (const levee::config_error& e) {
    errors = e.errors();
  }
  CHECK(errors == std::vector<std::string>{"defaults.minimum_calls: must be at least 1"});
  CHECK(api->options().failure_rate_threshold == 0.5);
  CHECK(api->options().minimum_calls == 10);
  CHECK(r.options().overrides.size() == 1);
  CHECK(api->metrics().window_calls == 4);
  CHECK(r.reconfigurations() == 0);
  settle(ioc);
}

TEST_CASE("config: SIGHUP reloads the file (the demo's --config), a bad file is refused") {
  virtual_time vt;
  asio::io_context ioc;
  temp_file file;
  file.write(before_doc);
  registry r(ioc);
  std::ostringstream log;
  auto reloader = demo::watch_config(ioc.get_executor(), r, file.path, log);
  REQUIRE(reloader);
  calls(ioc, r, "api:80", 3, 6);  // 9 calls, 33 %
  const auto api = r.get("api:80");

  // Polls until the signal has gone through asio's pipe; bounded.
  auto hup = [&](std::uint64_t seen) {
    std::raise(SIGHUP);
    for (int i = 0; i < 1000 && reloader->reloads() + reloader->failures() == seen; ++i) ioc.poll();
  };
  file.write("{\"defaults\": {\"minimum_calls\": \"ten\"}}");
  hup(0);
  CHECK(reloader->failures() == 1);
  CHECK_THAT(log.str(), Contains("defaults.minimum_calls: must be an integer, 0 or more"));
  CHECK(api->options().minimum_calls == 10);

  file.write(after_doc);
  hup(1);
  CHECK(reloader->reloads() == 1);
  CHECK(r.get("api:80") == api);
  CHECK(api->options().minimum_calls == 8);
  CHECK(api->metrics().window_calls == 9);
  calls(ioc, r, "api:80", 1, 0);  // 4 of 10 failed: 40 %
  CHECK(api->state() == circuit_state::open);
  reloader.reset();  // SIGHUP ignored from here on: the test goes on
  std::raise(SIGHUP);
  settle(ioc);
}
