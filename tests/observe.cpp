// Events, metrics, the stuck-open signal, manual control and the Prometheus
// exposition, on virtual time.
#include <levee/breaker/observe.hpp>

#include "support.hpp"

#include <levee/registry/registry.hpp>

#include <sstream>
#include <vector>

using namespace levee_test;
using levee::breaker_event;
using levee::circuit_state;
using levee::event_kind;
using levee::transition_reason;

namespace {

asio::awaitable<std::tuple<boost::system::error_code, int>> outcome_of(bool ok) {
  co_return std::tuple(
      ok ? boost::system::error_code() : make_error_code(boost::system::errc::connection_reset), 1);
}

struct recorder {
  std::vector<breaker_event> events;
  std::vector<std::string> names;  // copied: the view is valid only during the call
  levee::event_listener listener() {
    return [this](const breaker_event& e) {
      events.push_back(e);
      names.emplace_back(e.breaker);
    };
  }
  std::size_t count(event_kind k) const {
    std::size_t n = 0;
    for (const auto& e : events) n += e.kind == k;
    return n;
  }
};

using seconds_d = std::chrono::duration<double>;

}  // namespace

TEST_CASE("events: transitions from, to, why, when, delivered on the executor") {
  virtual_time vt;
  asio::io_context ioc;
  breaker cb(ioc, {.minimum_calls = 2, .open_duration = 30s}, "recommendations");
  recorder r;
  cb.listen(levee::transition_events, r.listener());
  run(ioc, cb(outcome_of(false)));
  run(ioc, cb(outcome_of(false)));  // trips; the event is posted, then delivered by settle
  REQUIRE(r.events.size() == 1);
  CHECK(r.events[0].kind == event_kind::transition);
  CHECK(r.events[0].from == circuit_state::closed);
  CHECK(r.events[0].to == circuit_state::open);
  CHECK(r.events[0].reason == transition_reason::failure_rate);
  CHECK(r.events[0].open_for == 30s);
  CHECK(r.names[0] == "recommendations");
  CHECK(r.events[0].when.time_since_epoch().count() != 0);

  elapse(ioc, 30s);
  REQUIRE(r.events.size() == 2);
  CHECK(r.events[1].to == circuit_state::half_open);
  CHECK(r.events[1].reason == transition_reason::open_elapsed);
  run(ioc, cb(outcome_of(true)));
  REQUIRE(r.events.size() == 3);
  CHECK(r.events[2].from == circuit_state::half_open);
  CHECK(r.events[2].to == circuit_state::closed);
  CHECK(r.events[2].reason == transition_reason::probes_succeeded);
  CHECK(r.count(event_kind::success) == 0);  // not subscribed
}

TEST_CASE("events: call outcomes and rejections, and unlisten") {
  virtual_time vt;
  asio::io_context ioc;
  breaker cb(ioc,
             {.minimum_calls = 3, .slow_call_duration = 50ms, .slow_call_rate_threshold = 1.0});
  recorder r;
  const auto id = cb.listen(levee::call_events, r.listener());
  fake_service api;
  run(ioc, cb(outcome_of(true)));
  run(ioc, cb(outcome_of(false)));
  run(ioc, cb(api.call_ec(boost::asio::error::operation_aborted)));
  auto slow = run(ioc, cb(api.call(true, 60ms)));
  elapse(ioc, 60ms);
  run(ioc, cb(outcome_of(false)));  // 2 failures of 4 counted (50 %): opens
  REQUIRE(cb.state() == circuit_state::open);
  run(ioc, cb(outcome_of(true)));  // rejected
  CHECK(r.count(event_kind::success) == 2);
  CHECK(r.count(event_kind::failure) == 2);
  CHECK(r.count(event_kind::ignored) == 1);
  CHECK(r.count(event_kind::rejected) == 1);
  CHECK(r.count(event_kind::transition) == 0);
  std::size_t slow_events = 0;
  for (const auto& e : r.events) slow_events += e.slow;
  CHECK(slow_events == 1);

  cb.unlisten(id);
  run(ioc, cb(outcome_of(true)));
  CHECK(r.count(event_kind::rejected) == 1);  // no longer delivered
}

TEST_CASE("events: a call's outcome comes before the transition it causes") {
  virtual_time vt;
  asio::io_context ioc;
  breaker cb(ioc, {.minimum_calls = 2});
  recorder r;
  cb.listen(levee::all_events, r.listener());
  run(ioc, cb(outcome_of(false)));
  run(ioc, cb(outcome_of(false)));  // opens
  REQUIRE(r.events.size() == 3);
  CHECK(r.events[1].kind == event_kind::failure);
  CHECK(r.events[1].from == circuit_state::closed);  // the state the call finished in
  CHECK(r.events[2].kind == event_kind::transition);
  CHECK(r.events[2].to == circuit_state::open);
}

TEST_CASE("events: an abandoned call is an ignored event, and counted as ignored") {
  virtual_time vt;
  asio::io_context ioc;
  breaker cb(ioc);
  recorder r;
  cb.listen(levee::call_events, r.listener());
  {
    asio::io_context caller;  // destroyed with the call still waiting
    asio::co_spawn(
        caller,
        [&]() -> asio::awaitable<void> {
          auto never = [&]() -> asio::awaitable<int> {
            timer t(caller, 1h);
            co_await t.async_wait(asio::use_awaitable);
            co_return 1;
          };
          co_await cb(never());
        },
        asio::detached);
    caller.poll();
  }
  settle(ioc);
  REQUIRE(r.events.size() == 1);
  CHECK(r.events[0].kind == event_kind::ignored);
  CHECK(cb.metrics().ignored == 1);
}

TEST_CASE("events: a listener can run on another executor") {
  virtual_time vt;
  asio::io_context ioc, listener_ioc;
  breaker cb(ioc, {.minimum_calls = 1});
  recorder r;
  cb.listen(levee::transition_events, r.listener(), listener_ioc.get_executor());
  run(ioc, cb(outcome_of(false)));
  CHECK(r.events.empty());  // not on the breaker's executor
  settle(listener_ioc);
  CHECK(r.events.size() == 1);
}

TEST_CASE("metrics: counts, rates and time in each state are exact") {
  virtual_time vt;
  asio::io_context ioc;
  breaker cb(ioc, {.failure_rate_threshold = 0.6, .minimum_calls = 4, .open_duration = 30s});
  elapse(ioc, 5s);
  run(ioc, cb(outcome_of(true)));
  run(ioc, cb(outcome_of(false)));
  auto m = cb.metrics();
  CHECK(m.state == circuit_state::closed);
  CHECK(m.successes == 1);
  CHECK(m.failures == 1);
  CHECK(m.window_calls == 2);
  CHECK(m.failure_rate == 0.5);
  CHECK(m.time_in_state[0] == 5s);
  run(ioc, cb(outcome_of(false)));
  run(ioc, cb(outcome_of(false)));  // 3 of 4: opens at t = 5 s
  run(ioc, cb(outcome_of(true)));   // rejected
  elapse(ioc, 30s);                 // HALF_OPEN at 35 s
  elapse(ioc, 1s);
  run(ioc, cb(outcome_of(true)));  // CLOSED at 36 s
  elapse(ioc, 4s);                 // now 40 s
  m = cb.metrics();
  using levee::circuit_state;
  CHECK(m.time_in_state[static_cast<int>(circuit_state::closed)] == 9s);  // 0-5 and 36-40
  CHECK(m.time_in_state[static_cast<int>(circuit_state::open)] == 30s);
  CHECK(m.time_in_state[static_cast<int>(circuit_state::half_open)] == 1s);
  CHECK(m.transitions[0][1] == 1);  // closed -> open
  CHECK(m.transitions[1][2] == 1);  // open -> half_open
  CHECK(m.transitions[2][0] == 1);  // half_open -> closed
  CHECK(m.rejected == 1);
  CHECK(m.successes == 2);
  CHECK(m.failures == 3);
  CHECK(m.window_calls == 0);  // a fresh window
  CHECK(m.open_streak == 0);
  CHECK(m.not_closed_for == 0s);
}

TEST_CASE("metrics: the stuck-open signal fires exactly at the recovery window") {
  virtual_time vt;
  asio::io_context ioc;
  breaker cb(ioc, {.minimum_calls = 1, .open_duration = 20s, .recovery_window = 60s});
  recorder r;
  cb.listen(levee::transition_events, r.listener());
  run(ioc, cb(outcome_of(false)));  // leaves CLOSED at t = 0
  for (int i = 0; i < 2; ++i) {     // keeps reopening: probes fail at 20 s and 40 s
    elapse(ioc, 20s);
    run(ioc, cb(outcome_of(false)));
  }
  elapse(ioc, 19999ms);  // 59.999 s
  CHECK(r.count(event_kind::stuck_open) == 0);
  CHECK_FALSE(cb.metrics().stuck_open);
  elapse(ioc, 1ms);  // 60 s
  CHECK(r.count(event_kind::stuck_open) == 1);
  const auto m = cb.metrics();
  CHECK(m.stuck_open);
  CHECK(m.not_closed_for == 60s);
  CHECK(m.open_streak == 3);
}

TEST_CASE("metrics: a breaker forced open is stuck open after the recovery window too") {
  virtual_time vt;
  asio::io_context ioc;
  breaker cb(ioc, {.recovery_window = 60s});
  recorder r;
  cb.listen(levee::transition_events, r.listener());
  cb.force_open();
  elapse(ioc, 59s);
  CHECK(r.count(event_kind::stuck_open) == 0);
  elapse(ioc, 1s);
  CHECK(r.count(event_kind::stuck_open) == 1);
  CHECK(cb.metrics().stuck_open);
  cb.reset();  // back to CLOSED: the signal clears
  settle(ioc);
  CHECK_FALSE(cb.metrics().stuck_open);
}

TEST_CASE("metrics: no stuck-open signal when the breaker recovers in time") {
  virtual_time vt;
  asio::io_context ioc;
  breaker cb(ioc, {.minimum_calls = 1, .open_duration = 20s, .recovery_window = 60s});
  recorder r;
  cb.listen(levee::transition_events, r.listener());
  run(ioc, cb(outcome_of(false)));
  elapse(ioc, 20s);
  run(ioc, cb(outcome_of(true)));  // closed at 20 s
  elapse(ioc, 60s);
  CHECK(r.count(event_kind::stuck_open) == 0);
  CHECK_FALSE(cb.metrics().stuck_open);
}

TEST_CASE("manual control: forced open, disabled, metrics-only, reset") {
  virtual_time vt;
  asio::io_context ioc;
  breaker cb(ioc, {.minimum_calls = 1, .open_duration = 1s});
  recorder r;
  cb.listen(levee::transition_events, r.listener());

  cb.force_open();
  settle(ioc);
  CHECK(cb.state() == circuit_state::forced_open);
  CHECK(std::get<0>(*run(ioc, cb(outcome_of(true)))->value) == levee::error::circuit_open);
  elapse(ioc, 1h);  // no timer: it stays open
  CHECK(cb.state() == circuit_state::forced_open);

  cb.disable();
  const auto failures_before = cb.metrics().failures;
  run(ioc, cb(outcome_of(false)));
  run(ioc, cb(outcome_of(false)));
  CHECK(cb.state() == circuit_state::disabled);         // never opens
  CHECK(cb.metrics().failures == failures_before + 2);  // counted by outcome
  CHECK(cb.metrics().window_calls == 0);                // but kept out of the window

  cb.metrics_only();
  for (int i = 0; i < 3; ++i) run(ioc, cb(outcome_of(false)));
  run(ioc, cb(outcome_of(true)));
  CHECK(cb.state() == circuit_state::metrics_only);  // over the threshold, still lets calls in
  CHECK(cb.metrics().window_calls == 4);             // recorded
  CHECK(cb.metrics().failure_rate == 0.75);

  cb.reset();
  settle(ioc);
  CHECK(cb.state() == circuit_state::closed);
  CHECK(cb.metrics().window_calls == 0);
  run(ioc, cb(outcome_of(false)));
  CHECK(cb.state() == circuit_state::open);  // behaves normally again

  REQUIRE(r.events.size() >= 4);
  for (int i = 0; i < 4; ++i)
    CHECK(r.events[static_cast<std::size_t>(i)].reason == transition_reason::manual);
  CHECK(r.events[0].to == circuit_state::forced_open);
  CHECK(r.events[1].from == circuit_state::forced_open);
  CHECK(r.events[1].to == circuit_state::disabled);
  CHECK(r.events[2].to == circuit_state::metrics_only);
  CHECK(r.events[3].to == circuit_state::closed);
  const auto m = cb.metrics();
  CHECK(m.transitions[static_cast<int>(circuit_state::closed)]
                     [static_cast<int>(circuit_state::forced_open)] == 1);
  CHECK(m.time_in_state[static_cast<int>(circuit_state::forced_open)] == 1h);
}

TEST_CASE("exposition: the Prometheus text is valid and stable") {
  virtual_time vt;
  asio::io_context ioc;
  levee::basic_breaker_registry<vclock> registry(
      ioc, {.defaults = {.minimum_calls = 1, .open_duration = 30s}});
  auto a = registry.get("api.example:80");
  auto b = registry.get("db \"main\"");
  run(ioc, (*a)(outcome_of(true)));
  run(ioc, (*b)(outcome_of(false)));  // opens
  run(ioc, (*b)(outcome_of(true)));   // rejected
  elapse(ioc, 2500ms);
  const std::string expected = R"(# HELP levee_calls_total Calls that finished, by outcome.
# TYPE levee_calls_total counter
levee_calls_total{breaker="api.example:80",outcome="success"} 1
levee_calls_total{breaker="api.example:80",outcome="failure"} 0
levee_calls_total{breaker="api.example:80",outcome="ignored"} 0
levee_calls_total{breaker="db \"main\"",outcome="success"} 0
levee_calls_total{breaker="db \"main\"",outcome="failure"} 1
levee_calls_total{breaker="db \"main\"",outcome="ignored"} 0
# HELP levee_slow_calls_total Calls that took at least slow_call_duration.
# TYPE levee_slow_calls_total counter
levee_slow_calls_total{breaker="api.example:80"} 0
levee_slow_calls_total{breaker="db \"main\""} 0
# HELP levee_rejected_calls_total Calls refused without being started.
# TYPE levee_rejected_calls_total counter
levee_rejected_calls_total{breaker="api.example:80"} 0
levee_rejected_calls_total{breaker="db \"main\""} 1
# HELP levee_state 1 for the breaker's current state, 0 for the others.
# TYPE levee_state gauge
levee_state{breaker="api.example:80",state="closed"} 1
levee_state{breaker="api.example:80",state="open"} 0
levee_state{breaker="api.example:80",state="half_open"} 0
levee_state{breaker="api.example:80",state="forced_open"} 0
levee_state{breaker="api.example:80",state="disabled"} 0
levee_state{breaker="api.example:80",state="metrics_only"} 0
levee_state{breaker="db \"main\"",state="closed"} 0
levee_state{breaker="db \"main\"",state="open"} 1
levee_state{breaker="db \"main\"",state="half_open"} 0
levee_state{breaker="db \"main\"",state="forced_open"} 0
levee_state{breaker="db \"main\"",state="disabled"} 0
levee_state{breaker="db \"main\"",state="metrics_only"} 0
# HELP levee_failure_ratio Failures over calls in the current window (0 to 1).
# TYPE levee_failure_ratio gauge
levee_failure_ratio{breaker="api.example:80"} 0
levee_failure_ratio{breaker="db \"main\""} 1
# HELP levee_slow_call_ratio Slow calls over calls in the current window (0 to 1).
# TYPE levee_slow_call_ratio gauge
levee_slow_call_ratio{breaker="api.example:80"} 0
levee_slow_call_ratio{breaker="db \"main\""} 0
# HELP levee_window_calls Calls in the current window.
# TYPE levee_window_calls gauge
levee_window_calls{breaker="api.example:80"} 1
levee_window_calls{breaker="db \"main\""} 1
# HELP levee_state_seconds_total Time spent in each state.
# TYPE levee_state_seconds_total counter
levee_state_seconds_total{breaker="api.example:80",state="closed"} 2.5
levee_state_seconds_total{breaker="api.example:80",state="open"} 0
levee_state_seconds_total{breaker="api.example:80",state="half_open"} 0
levee_state_seconds_total{breaker="api.example:80",state="forced_open"} 0
levee_state_seconds_total{breaker="api.example:80",state="disabled"} 0
levee_state_seconds_total{breaker="api.example:80",state="metrics_only"} 0
levee_state_seconds_total{breaker="db \"main\"",state="closed"} 0
levee_state_seconds_total{breaker="db \"main\"",state="open"} 2.5
levee_state_seconds_total{breaker="db \"main\"",state="half_open"} 0
levee_state_seconds_total{breaker="db \"main\"",state="forced_open"} 0
levee_state_seconds_total{breaker="db \"main\"",state="disabled"} 0
levee_state_seconds_total{breaker="db \"main\"",state="metrics_only"} 0
# HELP levee_transitions_total State transitions, by pair of states.
# TYPE levee_transitions_total counter
levee_transitions_total{breaker="db \"main\"",from="closed",to="open"} 1
# HELP levee_open_streak Openings since the breaker last closed.
# TYPE levee_open_streak gauge
levee_open_streak{breaker="api.example:80"} 0
levee_open_streak{breaker="db \"main\""} 1
# HELP levee_not_closed_seconds Time since the breaker last left CLOSED.
# TYPE levee_not_closed_seconds gauge
levee_not_closed_seconds{breaker="api.example:80"} 0
levee_not_closed_seconds{breaker="db \"main\""} 2.5
# HELP levee_stuck_open 1 when the breaker has not been CLOSED for its recovery window.
# TYPE levee_stuck_open gauge
levee_stuck_open{breaker="api.example:80"} 0
levee_stuck_open{breaker="db \"main\""} 0
# HELP levee_reconfigurations_total Times reconfigure applied new options to the breaker.
# TYPE levee_reconfigurations_total counter
levee_reconfigurations_total{breaker="api.example:80"} 0
levee_reconfigurations_total{breaker="db \"main\""} 0
)";
  CHECK(registry.prometheus_text() == expected);
}

namespace {
// The exposition without its values: the series, in order.
std::vector<std::string> series_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    out.push_back(line.starts_with('#') ? line : line.substr(0, line.rfind(' ')));
  return out;
}
}  // namespace

TEST_CASE("exposition: the same series in the same order as time and calls go by") {
  virtual_time vt;
  asio::io_context ioc;
  levee::basic_breaker_registry<vclock> registry(
      ioc, {.defaults = {.minimum_calls = 1, .open_duration = 30s}});
  auto z = registry.get("z:80");  // created first, listed last: order is by name
  auto a = registry.get("a:80");
  run(ioc, (*a)(outcome_of(false)));  // a opens: a transition series appears
  const std::string before = registry.prometheus_text();
  elapse(ioc, 10s);
  run(ioc, (*z)(outcome_of(true)));
  run(ioc, (*a)(outcome_of(true)));  // rejected
  const std::string after = registry.prometheus_text();
  CHECK(after != before);  // the values moved
  CHECK(series_of(after) == series_of(before));
  CHECK(before.find("breaker=\"a:80\"") < before.find("breaker=\"z:80\""));
}

TEST_CASE("exposition: label values are escaped (backslash, quote, newline)") {
  std::ostringstream out;
  levee::write_prometheus(out, {{"a\\b \"c\"\nd", {}}});
  const std::string text = out.str();
  CHECK(text.find(R"(levee_rejected_calls_total{breaker="a\\b \"c\"\nd"} 0)") != std::string::npos);
  std::istringstream in(text);  // no raw newline splits a sample
  for (std::string line; std::getline(in, line);)
    CHECK((line.starts_with("# ") || line.starts_with("levee_")));
}

TEST_CASE("exposition: label values are always valid UTF-8 (U+FFFD for invalid sequences)") {
  // One invalid breaker name must not make Prometheus reject the whole scrape.
  // Each maximal ill-formed subpart becomes one U+FFFD (Unicode 15, 3.9):
  // a truncated sequence, a stray byte, an overlong form, a surrogate, a
  // code point above U+10FFFF; valid sequences pass unchanged.
  std::ostringstream out;
  levee::write_prometheus(
      out, {{"ok\xC3("                                                  // truncated 2-byte sequence
             "\xFF"                                                     // never valid
             "\xE2\x82x"                                                // truncated 3-byte sequence
             "\xC0\xAF"                                                 // overlong '/'
             "\xED\xA0\x80"                                             // surrogate U+D800
             "\xF4\x90\x80\x80"                                         // U+110000
             "\x80"                                                     // stray continuation
             "\"\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80\xF4\x8F\xBF\xBF",  // é € 😀 U+10FFFF
             {}},
            {"end\xF0\x9F\x98", {}}});  // truncated at the very end
  const std::string text = out.str();
  const std::string fffd = "\xEF\xBF\xBD";
  CHECK(text.find("levee_rejected_calls_total{breaker=\"ok" + fffd + "(" + fffd + fffd + "x" +
                  fffd + fffd + fffd + fffd + fffd + fffd + fffd + fffd + fffd + fffd +
                  "\\\"\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80\xF4\x8F\xBF\xBF\"} 0\n") !=
        std::string::npos);
  CHECK(text.find("levee_rejected_calls_total{breaker=\"end" + fffd + "\"} 0\n") !=
        std::string::npos);

  // The whole text is valid UTF-8.
  auto valid_utf8 = [](std::string_view s) {
    for (std::size_t i = 0; i < s.size();) {
      const auto c = static_cast<unsigned char>(s[i]);
      std::size_t n = c < 0x80         ? 1
                      : (c >> 5) == 6  ? 2
                      : (c >> 4) == 14 ? 3
                      : (c >> 3) == 30 ? 4
                                       : 0;
      if (n == 0 || i + n > s.size()) return false;
      std::uint32_t cp = n == 1 ? c : c & (0x7F >> n);
      for (std::size_t k = 1; k < n; ++k) {
        const auto d = static_cast<unsigned char>(s[i + k]);
        if ((d & 0xC0) != 0x80) return false;
        cp = cp << 6 | (d & 0x3F);
      }
      const std::uint32_t least[] = {0, 0, 0x80, 0x800, 0x10000};
      if (cp < least[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
      i += n;
    }
    return true;
  };
  CHECK(valid_utf8(text));
}

// Issue 11, defect 11: a manual call to the state the breaker is already in
// is a no-op: no X -> X transition, no event, and METRICS_ONLY keeps its window.
TEST_CASE("manual control: repeating force_open, disable or metrics_only changes nothing") {
  virtual_time vt;
  asio::io_context ioc;
  breaker cb(ioc, {.minimum_calls = 100});
  recorder r;
  cb.listen(levee::transition_events, r.listener());
  const auto self = [](circuit_state s) {
    return std::pair(static_cast<std::size_t>(s), static_cast<std::size_t>(s));
  };

  cb.force_open();
  const auto generation = cb.metrics().transitions;
  cb.force_open();
  settle(ioc);
  CHECK(r.events.size() == 1);
  auto [fi, fj] = self(circuit_state::forced_open);
  CHECK(cb.metrics().transitions[fi][fj] == 0);
  CHECK(cb.metrics().transitions == generation);

  cb.disable();
  cb.disable();
  settle(ioc);
  CHECK(r.events.size() == 2);
  auto [di, dj] = self(circuit_state::disabled);
  CHECK(cb.metrics().transitions[di][dj] == 0);

  cb.metrics_only();
  for (int i = 0; i < 3; ++i) run(ioc, cb(outcome_of(false)));
  REQUIRE(cb.metrics().window_calls == 3);
  cb.metrics_only();
  settle(ioc);
  CHECK(r.events.size() == 3);
  CHECK(cb.metrics().window_calls == 3);  // kept
  auto [mi, mj] = self(circuit_state::metrics_only);
  CHECK(cb.metrics().transitions[mi][mj] == 0);

  // reset() from CLOSED clears the window (what a reset is for) but is no
  // transition either.
  cb.reset();
  run(ioc, cb(outcome_of(false)));
  settle(ioc);
  REQUIRE(r.events.size() == 4);
  REQUIRE(cb.metrics().window_calls == 1);
  cb.reset();
  settle(ioc);
  CHECK(r.events.size() == 4);
  CHECK(cb.metrics().window_calls == 0);
  auto [ci, cj] = self(circuit_state::closed);
  CHECK(cb.metrics().transitions[ci][cj] == 0);
}

TEST_CASE("metrics: recovery_window = max() never raises stuck_open (issue 11, defect 7)") {
  virtual_time vt;
  asio::io_context ioc;
  breaker cb(ioc, {.minimum_calls = 1,
                   .open_duration = 1h,
                   .recovery_window = std::chrono::nanoseconds::max()});
  recorder r;
  cb.listen(levee::transition_events, r.listener());
  elapse(ioc, 1h);  // left_closed + recovery_window overflows unless it saturates
  run(ioc, cb(outcome_of(false)));
  REQUIRE(cb.state() == circuit_state::open);
  elapse(ioc, 1ms);
  elapse(ioc, 30min);
  CHECK(r.count(event_kind::stuck_open) == 0);
  CHECK_FALSE(cb.metrics().stuck_open);
}

// Issue 11, feature: the transition to OPEN says what tripped it.
TEST_CASE(
    "events: a transition to OPEN carries the rate, the window's calls and the last failure") {
  virtual_time vt;
  asio::io_context ioc;
  SECTION("failure rate, last error_code") {
    breaker cb(ioc, {.failure_rate_threshold = 0.5, .minimum_calls = 4});
    recorder r;
    cb.listen(levee::transition_events, r.listener());
    run(ioc, cb(outcome_of(true)));
    run(ioc, cb(outcome_of(true)));
    run(ioc, cb(outcome_of(false)));
    run(ioc, cb(outcome_of(false)));  // 2 of 4
    REQUIRE(r.events.size() == 1);
    const breaker_event& e = r.events[0];
    CHECK(e.to == circuit_state::open);
    CHECK(e.reason == transition_reason::failure_rate);
    CHECK(e.rate == 0.5);
    CHECK(e.calls == 4);
    CHECK(e.last_error == boost::system::errc::connection_reset);
    CHECK_FALSE(e.last_exception);
  }
  SECTION("a success that reaches minimum_calls: the last failure is an earlier call's") {
    breaker cb(ioc, {.failure_rate_threshold = 0.5, .minimum_calls = 3});
    recorder r;
    cb.listen(levee::transition_events, r.listener());
    fake_service api;
    run(ioc, cb(api.call(false)));
    run(ioc, cb(outcome_of(false)));
    run(ioc, cb(outcome_of(true)));  // 2 of 3: the success trips it
    REQUIRE(r.events.size() == 1);
    CHECK(r.events[0].calls == 3);
    CHECK(r.events[0].rate == Approx(2.0 / 3));
    CHECK(r.events[0].last_error == boost::system::errc::connection_reset);
  }
  SECTION("an exception, consecutive failures, then a failed probe") {
    breaker cb(ioc, {.minimum_calls = 100, .open_duration = 1s, .consecutive_failures = 3});
    recorder r;
    cb.listen(levee::transition_events, r.listener());
    fake_service api;
    for (int i = 0; i < 3; ++i) run(ioc, cb(api.call(false)));
    REQUIRE(r.events.size() == 1);
    CHECK(r.events[0].reason == transition_reason::consecutive_failures);
    CHECK(r.events[0].calls == 3);  // in a row
    CHECK(r.events[0].rate == 1.0);
    REQUIRE(r.events[0].last_exception);
    CHECK_THROWS_AS(std::rethrow_exception(r.events[0].last_exception), service_error);
    elapse(ioc, 1s);
    run(ioc, cb(outcome_of(false)));  // the probe fails
    REQUIRE(r.events.size() == 3);
    CHECK(r.events[2].reason == transition_reason::probe_failed);
    CHECK(r.events[2].last_error == boost::system::errc::connection_reset);
    CHECK_FALSE(r.events[2].last_exception);
  }
  SECTION("slow-call rate") {
    breaker cb(ioc,
               {.minimum_calls = 2, .slow_call_duration = 1s, .slow_call_rate_threshold = 0.5});
    recorder r;
    cb.listen(levee::transition_events, r.listener());
    fake_service api;
    run(ioc, cb(api.call(true)));
    auto slow = run(ioc, cb(api.call(true, 2s)));
    elapse(ioc, 2s);
    REQUIRE(r.events.size() == 1);
    CHECK(r.events[0].reason == transition_reason::slow_call_rate);
    CHECK(r.events[0].rate == 0.5);
    CHECK(r.events[0].calls == 2);
    CHECK_FALSE(r.events[0].last_error);
  }
}

// Issue 18, item 4: a transition to OPEN that no failure caused carries no
// last failure (it used to carry the one that tripped the breaker before).
TEST_CASE("events: a transition to OPEN that no failure caused carries no last failure") {
  virtual_time vt;
  asio::io_context ioc;
  breaker cb(ioc, {.minimum_calls = 100,
                   .open_duration = 1s,
                   .max_half_open_duration = 3s,
                   .consecutive_failures = 2,
                   .slow_call_duration = 1s,
                   .probe_timeout = std::chrono::nanoseconds::max()});  // no probe deadline
  recorder r;
  cb.listen(levee::transition_events, r.listener());
  fake_service api;
  run(ioc, cb(api.call(false)));
  run(ioc, cb(api.call(false)));  // OPEN, consecutive_failures: the failure it carries
  REQUIRE(r.events.size() == 1);
  CHECK(r.events[0].last_exception);
  SECTION("half_open_timeout") {
    elapse(ioc, 1s);                                 // HALF_OPEN
    auto probe = run(ioc, cb(api.call(true, 10s)));  // never answers in time
    elapse(ioc, 3s);                                 // the half-open timer: OPEN again
    REQUIRE(r.events.size() == 3);
    CHECK(r.events[2].reason == transition_reason::half_open_timeout);
    CHECK_FALSE(r.events[2].last_exception);
    CHECK_FALSE(r.events[2].last_error);
    elapse(ioc, 10s);
  }
  SECTION("a probe that succeeded slowly") {
    elapse(ioc, 1s);  // HALF_OPEN
    auto probe = run(ioc, cb(api.call(true, 2s)));
    elapse(ioc, 2s);  // a success, but slow: OPEN again
    REQUIRE(r.events.size() == 3);
    CHECK(r.events[2].reason == transition_reason::probe_failed);
    CHECK(r.events[2].calls == 1);
    CHECK_FALSE(r.events[2].last_exception);
    CHECK_FALSE(r.events[2].last_error);
  }
  SECTION("a slow-call-rate trip of slow successes, after a failure that tripped nothing") {
    breaker slow(ioc,
                 {.minimum_calls = 3, .slow_call_duration = 1s, .slow_call_rate_threshold = 0.6});
    recorder s;
    slow.listen(levee::transition_events, s.listener());
    run(ioc, slow(api.call(false)));  // a failure: 1 of 1 failed, under minimum_calls
    auto a = run(ioc, slow(api.call(true, 2s)));
    auto b = run(ioc, slow(api.call(true, 2s)));
    elapse(ioc, 2s);  // 2 slow of 3: OPEN by slow_call_rate
    REQUIRE(s.events.size() == 1);
    CHECK(s.events[0].reason == transition_reason::slow_call_rate);
    CHECK_FALSE(s.events[0].last_exception);
    CHECK_FALSE(s.events[0].last_error);
  }
}
