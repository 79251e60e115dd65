// Retry policies on virtual time.
#include <levee/retry/retry.hpp>
#include <levee/timeout.hpp>
#include <levee/timeout/deadline.hpp>

#include "promtool.hpp"
#include "support.hpp"

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/experimental/parallel_group.hpp>

#include <algorithm>
#include <sstream>
#include <thread>
#include <vector>

using namespace levee_test;
using levee::jitter_kind;

namespace {

using policy_type = levee::basic_retry_policy<levee_test::vclock>;

/// A downstream that fails its first `failures` calls, recording when each
/// attempt started (virtual time since the test began).
struct flaky {
  int failures = 1000;
  std::vector<std::chrono::nanoseconds> starts;
  boost::system::error_code error = make_error_code(boost::system::errc::connection_reset);

  asio::awaitable<std::tuple<boost::system::error_code, int>> call_ec() {
    starts.push_back(vclock::now().time_since_epoch());
    if (static_cast<int>(starts.size()) <= failures) co_return std::tuple(error, 0);
    co_return std::tuple(boost::system::error_code(), 7);
  }
  asio::awaitable<int> call() {
    auto [ec, v] = co_await call_ec();
    if (ec) throw boost::system::system_error(ec);
    co_return v;
  }
};

std::vector<std::chrono::nanoseconds> gaps(const std::vector<std::chrono::nanoseconds>& starts) {
  std::vector<std::chrono::nanoseconds> g;
  for (std::size_t i = 1; i < starts.size(); ++i) g.push_back(starts[i] - starts[i - 1]);
  return g;
}

/// Runs `aw`, moving virtual time 1 ms at a time until it finishes.
template <class T>
std::shared_ptr<pending<T>> run_to_end(asio::io_context& ioc, asio::awaitable<T> aw) {
  auto p = spawn(ioc, std::move(aw));
  settle(ioc);
  for (int i = 0; i < 1'000'000 && !p->done; ++i) elapse(ioc, 1ms);
  return p;
}

}  // namespace

TEST_CASE("retry: attempts and delays exactly as configured, without jitter") {
  virtual_time vt;
  asio::io_context ioc;
  policy_type policy({.max_attempts = 4,
                      .initial_delay = 100ms,
                      .multiplier = 2,
                      .max_delay = 250ms,
                      .jitter = jitter_kind::none});
  flaky api;
  auto r = run_to_end(ioc, levee::retry(policy, [&] { return api.call(); }));
  REQUIRE(r->done);
  CHECK(r->thrown_code() == boost::system::errc::connection_reset);  // the last error, unchanged
  CHECK(api.starts.size() == 4);
  CHECK(gaps(api.starts) == std::vector<std::chrono::nanoseconds>{100ms, 200ms, 250ms});  // capped
}

TEST_CASE("retry: success on a later attempt returns its value") {
  virtual_time vt;
  asio::io_context ioc;
  policy_type policy({.max_attempts = 5, .initial_delay = 10ms, .jitter = jitter_kind::none});
  flaky api;
  api.failures = 2;
  auto r = run_to_end(ioc, levee::retry(policy, [&] { return api.call(); }));
  CHECK(r->value == 7);
  CHECK(api.starts.size() == 3);
}

TEST_CASE("retry: the tuple form retries on the error_code and returns the last tuple") {
  virtual_time vt;
  asio::io_context ioc;
  policy_type policy({.max_attempts = 3, .initial_delay = 10ms, .jitter = jitter_kind::none});
  flaky api;
  auto r = run_to_end(ioc, levee::retry(policy, [&] { return api.call_ec(); }));
  REQUIRE(r->done);
  CHECK_FALSE(r->error);
  CHECK(std::get<0>(*r->value) == boost::system::errc::connection_reset);
  CHECK(api.starts.size() == 3);
}

TEST_CASE("retry: seeded jitter gives the same delays on every run, within each kind's bounds") {
  for (jitter_kind kind : {jitter_kind::full, jitter_kind::equal, jitter_kind::decorrelated}) {
    INFO("jitter " << static_cast<int>(kind));
    virtual_time vt;
    asio::io_context ioc;
    const levee::retry_options o{.max_attempts = 6,
                                 .initial_delay = 100ms,
                                 .multiplier = 2,
                                 .max_delay = 1s,
                                 .jitter = kind,
                                 .seed = 42};
    policy_type policy(o);
    flaky api;
    run_to_end(ioc, levee::retry(policy, [&] { return api.call(); }));
    const auto observed = gaps(api.starts);
    REQUIRE(observed.size() == 5);

    // Exactly the schedule a fresh policy with the same seed produces.
    policy_type twin(o);
    auto schedule = twin.schedule();
    std::vector<std::chrono::nanoseconds> expected;
    for (int i = 0; i < 5; ++i) expected.push_back(schedule.next());
    // Virtual time moves in 1 ms steps in run_to_end: compare at that grain.
    for (std::size_t i = 0; i < 5; ++i) {
      const auto want = std::chrono::ceil<std::chrono::milliseconds>(expected[i]);
      CHECK(observed[i] == want);
    }

    std::chrono::nanoseconds base = 100ms, previous = 100ms;
    for (const auto d : expected) {
      switch (kind) {
        case jitter_kind::full:
          CHECK(d >= 0ns);
          CHECK(d <= base);
          break;
        case jitter_kind::equal:
          CHECK(d >= base / 2);
          CHECK(d <= base);
          break;
        default:
          CHECK(d >= 100ms);
          CHECK(d <= std::min<std::chrono::nanoseconds>(1s, 3 * previous));
          break;
      }
      previous = d;
      base = std::min<std::chrono::nanoseconds>(1s, base * 2);
    }
  }
}

TEST_CASE("random seeds: odd, distinct, and distinct across threads") {
  // The seed of every unseeded breaker, limit, throttle and retry: the
  // thread's generator, seeded once from std::random_device (reading the
  // device for each seed cost 6 us here).
  std::vector<std::uint64_t> seeds;
  for (int i = 0; i < 10'000; ++i) seeds.push_back(levee::detail::random_seed());
  std::vector<std::uint64_t> other;
  std::thread([&] {
    for (int i = 0; i < 10'000; ++i) other.push_back(levee::detail::random_seed());
  }).join();
  seeds.insert(seeds.end(), other.begin(), other.end());
  for (const auto s : seeds) CHECK((s & 1u) == 1u);  // never 0
  std::sort(seeds.begin(), seeds.end());
  CHECK(std::adjacent_find(seeds.begin(), seeds.end()) == seeds.end());
  // Spread over the whole range: as many above the middle as below, give or take.
  const auto high =
      std::count_if(seeds.begin(), seeds.end(), [](std::uint64_t s) { return s >> 63; });
  CHECK(high > 9'000);
  CHECK(high < 11'000);
}

TEST_CASE("retry: different seeds give different delays") {
  policy_type a({.jitter = jitter_kind::full, .seed = 1});
  policy_type b({.jitter = jitter_kind::full, .seed = 2});
  auto sa = a.schedule();
  auto sb = b.schedule();
  CHECK(sa.next() != sb.next());
}

TEST_CASE("retry: never after circuit_open, the rejected call is returned at once") {
  virtual_time vt;
  asio::io_context ioc;
  breaker cb(ioc, {.minimum_calls = 1, .open_duration = 1h});
  flaky api;
  run(ioc, cb(api.call_ec()));  // opens it
  REQUIRE(cb.state() == levee::circuit_state::open);
  policy_type policy({.max_attempts = 5, .initial_delay = 1ms});
  auto r = run(ioc, levee::retry(policy, [&] { return cb(api.call_ec()); }));
  REQUIRE(r->done);
  CHECK(std::get<0>(*r->value) == levee::error::circuit_open);
  CHECK(api.starts.size() == 1);  // only the call that opened it
  CHECK(cb.counters().rejected == 1);

  auto thrown = run(ioc, levee::retry(policy, [&] { return cb(api.call()); }));
  CHECK(thrown->thrown_code() == levee::error::circuit_open);
  CHECK(cb.counters().rejected == 2);
}

TEST_CASE("retry: default_retryable") {
  using levee::call_result;
  const boost::system::error_code reset = make_error_code(boost::system::errc::connection_reset),
                                  open = levee::error::circuit_open,
                                  full = levee::error::bulkhead_full,
                                  timeout = levee::error::timeout,
                                  deadline = levee::error::deadline_exceeded,
                                  aborted = boost::asio::error::operation_aborted, ok;
  auto ec = [](const boost::system::error_code& e) { return call_result(nullptr, nullptr, &e); };
  CHECK(levee::default_retryable(ec(reset)));
  CHECK(levee::default_retryable(ec(timeout)));
  CHECK_FALSE(levee::default_retryable(ec(open)));
  CHECK_FALSE(levee::default_retryable(ec(full)));
  CHECK_FALSE(levee::default_retryable(ec(deadline)));
  CHECK_FALSE(levee::default_retryable(ec(aborted)));
  CHECK_FALSE(levee::default_retryable(ec(ok)));
  CHECK_FALSE(levee::default_retryable(call_result()));
  CHECK(levee::default_retryable(
      call_result(std::make_exception_ptr(std::runtime_error("x")), nullptr)));
}

TEST_CASE("retry: a predicate decides what is retryable") {
  virtual_time vt;
  asio::io_context ioc;
  policy_type policy({.max_attempts = 5,
                      .initial_delay = 1ms,
                      .retryable = [](const levee::call_result&) { return false; }});
  flaky api;
  auto r = run_to_end(ioc, levee::retry(policy, [&] { return api.call(); }));
  CHECK(r->thrown_code() == boost::system::errc::connection_reset);
  CHECK(api.starts.size() == 1);
}

TEST_CASE("retry: a Retry-After hint sets the next delay, capped") {
  virtual_time vt;
  asio::io_context ioc;
  policy_type policy(
      {.max_attempts = 3,
       .initial_delay = 10ms,
       .jitter = jitter_kind::none,
       .max_retry_after = 2s,
       .retry_after = [n = 0](const levee::call_result&) mutable
       -> std::optional<std::chrono::nanoseconds> { return ++n == 1 ? 1500ms : 5s; }});
  flaky api;
  run_to_end(ioc, levee::retry(policy, [&] { return api.call(); }));
  CHECK(gaps(api.starts) == std::vector<std::chrono::nanoseconds>{1500ms, 2s});
}

TEST_CASE("retry: the budget bounds the total attempts under a 100 % failing dependency") {
  virtual_time vt;
  asio::io_context ioc;
  auto budget = std::make_shared<levee::retry_budget>(
      levee::retry_budget_options{.ratio = 0.2, .min_retries_per_second = 1, .ttl = 10s});
  policy_type policy(
      {.max_attempts = 4, .initial_delay = 10ms, .jitter = jitter_kind::none, .budget = budget});
  flaky api;  // always fails
  std::vector<std::shared_ptr<pending<int>>> calls;
  for (int i = 0; i < 200; ++i)
    calls.push_back(spawn(ioc, levee::retry(policy, [&] { return api.call(); })));
  settle(ioc);
  for (int i = 0; i < 2000; ++i) elapse(ioc, 1ms);  // 2 s: every call has finished
  for (auto& c : calls) REQUIRE(c->done);
  // 200 first attempts, and retries only from the floor: 1 per second over a
  // 10 s window = 10, with no success to earn more. Without the budget: 800.
  CHECK(api.starts.size() == 210);
  CHECK(budget->state(vclock::now().time_since_epoch()).retries == 10);
}

namespace {
/// A result that is a value, not an error_code: an HTTP-like status.
struct status {
  int code = 0;
};
bool status_retryable(const levee::call_result& r) {
  const auto* s = r.value<status>();
  return s ? s->code >= 500 : levee::default_retryable(r);
}
}  // namespace

TEST_CASE("retry: an outage of 503s earns no retries: the budget's floor bounds them") {
  // Operations that give up on a 503 (a value the predicate retries, with no
  // error_code) are failures: they must not deposit successes in the budget.
  virtual_time vt;
  asio::io_context ioc;
  auto budget = std::make_shared<levee::retry_budget>(
      levee::retry_budget_options{.ratio = 1, .min_retries_per_second = 0.1, .ttl = 10s});
  policy_type policy({.max_attempts = 2,
                      .initial_delay = 1ms,
                      .jitter = jitter_kind::none,
                      .retryable = status_retryable,
                      .budget = budget});
  int attempts = 0;
  int answer = 503;
  auto call = [&]() -> asio::awaitable<status> {
    ++attempts;
    co_return status{answer};
  };
  auto operations = [&](int n) -> asio::awaitable<int> {
    for (int i = 0; i < n; ++i) {
      const status s = co_await levee::retry(policy, call);
      (void)s;
    }
    co_return n;
  };
  auto outage = run_to_end(ioc, operations(1000));
  REQUIRE(outage->done);
  const auto now = [] { return vclock::now().time_since_epoch(); };
  // The floor (0.1 per second over 10 s) allows one retry, and no operation
  // succeeded to earn more. (Crediting each 503 as a success: 1,000 retries.)
  CHECK(budget->state(now()).retries == 1);
  CHECK(budget->state(now()).successes == 0);
  CHECK(attempts == 1001);

  // A thrown error the predicate does not retry is not a success either.
  auto thrown = run_to_end(ioc, levee::retry(policy, []() -> asio::awaitable<int> {
                             throw std::logic_error("bad request");
                             co_return 0;
                           }));
  REQUIRE(thrown->done);
  CHECK(budget->state(now()).successes == 0);

  // Real successes, and a 404 (the predicate does not retry it, and it is not
  // an error): deposits.
  answer = 200;
  run_to_end(ioc, operations(2));
  answer = 404;
  run_to_end(ioc, operations(1));
  CHECK(budget->state(now()).successes == 3);
}

TEST_CASE("retry: successes earn retries from the budget") {
  levee::retry_budget budget({.ratio = 0.5, .min_retries_per_second = 0, .ttl = 10s});
  using std::chrono::nanoseconds;
  CHECK_FALSE(budget.try_withdraw(0s));
  for (int i = 0; i < 10; ++i) budget.deposit(nanoseconds(1s));
  int granted = 0;
  while (budget.try_withdraw(2s)) ++granted;
  CHECK(granted == 5);
  CHECK(budget.state(2s).available == 0);
  // The successes leave the window after ttl (10 buckets of 1 s): at 11 s.
  CHECK(budget.state(10s).successes == 10);
  CHECK(budget.state(11s).successes == 0);
  CHECK(budget.state(12s).retries == 0);
}

TEST_CASE("retry: the budget's options are validated by name") {
  CHECK_THROWS_WITH(levee::retry_budget({.ratio = -1}),
                    "retry_budget_options::ratio must be in [0, 10]");
  CHECK_THROWS_WITH(levee::retry_budget({.ttl = 0s}),
                    "retry_budget_options::ttl must be greater than zero");
  CHECK_THROWS_WITH(levee::retry_budget({.buckets = 0}),
                    "retry_budget_options::buckets must be in [1, 1000]");
  CHECK_THROWS_WITH(levee::retry_budget({.min_retries_per_second = -1}),
                    "retry_budget_options::min_retries_per_second must be in [0, 1e9]");
}

TEST_CASE("retry: invalid options are refused by name") {
  auto refused = [](levee::retry_options o, const std::string& member) {
    try {
      policy_type p(std::move(o));
      FAIL("accepted " << member);
    } catch (const std::invalid_argument& e) {
      CHECK(std::string(e.what()).rfind("retry_options::" + member + " ", 0) == 0);
    }
  };
  refused({.max_attempts = 0}, "max_attempts");
  refused({.initial_delay = -1ms}, "initial_delay");
  refused({.multiplier = 0.5}, "multiplier");
  refused({.initial_delay = 2s, .max_delay = 1s}, "max_delay");
  refused({.jitter = static_cast<jitter_kind>(9)}, "jitter");
  refused({.max_retry_after = -1s}, "max_retry_after");
}

TEST_CASE("retry: the caller's cancellation ends the wait between attempts") {
  virtual_time vt;
  asio::io_context ioc;
  policy_type policy(
      {.max_attempts = 5, .initial_delay = 1h, .max_delay = 1h, .jitter = jitter_kind::none});
  flaky api;
  asio::cancellation_signal cancel;
  std::exception_ptr error;
  bool done = false;
  asio::co_spawn(ioc, levee::retry(policy, [&] { return api.call(); }),
                 asio::bind_cancellation_slot(cancel.slot(), [&](std::exception_ptr e, int) {
                   done = true;
                   error = e;
                 }));
  settle(ioc);
  CHECK(api.starts.size() == 1);
  cancel.emit(asio::cancellation_type::terminal);
  settle(ioc);
  REQUIRE(done);
  REQUIRE(error);
  try {
    std::rethrow_exception(error);
  } catch (const boost::system::system_error& e) {
    CHECK(e.code() == boost::asio::error::operation_aborted);
  }
  CHECK(api.starts.size() == 1);
}

TEST_CASE("retry: the completion-token form, with a plain callback") {
  virtual_time vt;
  asio::io_context ioc;
  policy_type policy({.max_attempts = 3, .initial_delay = 5ms, .jitter = jitter_kind::none});
  flaky api;
  api.failures = 1;
  int value = 0;
  levee::async_retry(
      ioc.get_executor(), policy, [&] { return api.call(); },
      [&](std::exception_ptr e, int v) {
        if (!e) value = v;
      });
  settle(ioc);
  elapse(ioc, 5ms);
  CHECK(value == 7);
  CHECK(api.starts.size() == 2);
}

namespace {

using ns = std::chrono::nanoseconds;

asio::awaitable<int> deadline_seen(std::vector<std::optional<ns>>& seen) {
  seen.push_back(levee::remaining_deadline(co_await asio::this_coro::executor));
  if (seen.size() < 2) throw boost::system::system_error(asio::error::connection_reset);
  co_return 7;
}

// async_retry on the io_context's executor, awaited by the caller.
asio::awaitable<int> retry_elsewhere(asio::io_context& ioc, policy_type& policy,
                                     std::vector<std::optional<ns>>& seen) {
  co_return co_await levee::async_retry(
      ioc.get_executor(), policy, [&seen] { return deadline_seen(seen); }, asio::use_awaitable);
}

}  // namespace

TEST_CASE("retry: the completion-token form on another executor carries the caller's deadline") {
  virtual_time vt;
  asio::io_context ioc;
  policy_type policy({.max_attempts = 3, .initial_delay = 5ms, .jitter = jitter_kind::none});
  std::vector<std::optional<ns>> seen;
  auto p = spawn(ioc, levee::with_deadline<vclock>(100ms, retry_elsewhere(ioc, policy, seen)));
  settle(ioc);
  elapse(ioc, 5ms);
  REQUIRE(p->done);
  CHECK(*p->value == 7);
  REQUIRE(seen.size() == 2);
  CHECK(seen[0] == std::optional<ns>(100ms));
  CHECK(seen[1] == std::optional<ns>(95ms));  // the second attempt, 5 ms later
  // The way back: without a deadline, none is seen.
  seen.clear();
  auto q = run_to_end(ioc, retry_elsewhere(ioc, policy, seen));
  REQUIRE(q->done);
  REQUIRE(seen.size() == 2);
  CHECK(seen[0] == std::nullopt);
  CHECK(seen[1] == std::nullopt);
}

namespace {

asio::awaitable<void> void_deadline_seen(std::vector<std::optional<ns>>& seen) {
  seen.push_back(levee::remaining_deadline(co_await asio::this_coro::executor));
  if (seen.size() < 2) throw boost::system::system_error(asio::error::connection_reset);
}

asio::awaitable<int> void_retry_elsewhere(asio::io_context& ioc, policy_type& policy,
                                          std::vector<std::optional<ns>>& seen) {
  co_await levee::async_retry(
      ioc.get_executor(), policy, [&seen] { return void_deadline_seen(seen); },
      asio::use_awaitable);
  co_return 1;
}

}  // namespace

TEST_CASE("retry: the completion-token form of an awaitable<void>") {
  // Its completion signature is void(std::exception_ptr) (async_retry in
  // retry/retry.hpp); it did not compile (the signature was formed as
  // void(std::exception_ptr, void)).
  virtual_time vt;
  asio::io_context ioc;
  policy_type policy({.max_attempts = 3, .initial_delay = 5ms, .jitter = jitter_kind::none});
  std::vector<std::optional<ns>> seen;
  int completions = 0;
  levee::async_retry(
      ioc.get_executor(), policy, [&seen] { return void_deadline_seen(seen); },
      [&](std::exception_ptr e) {
        CHECK_FALSE(e);
        ++completions;
      });
  settle(ioc);
  elapse(ioc, 5ms);
  CHECK(completions == 1);
  REQUIRE(seen.size() == 2);
  CHECK(seen[1] == std::nullopt);
  // Inside with_deadline, on another executor: it carries the deadline.
  seen.clear();
  auto p = spawn(ioc, levee::with_deadline<vclock>(100ms, void_retry_elsewhere(ioc, policy, seen)));
  settle(ioc);
  elapse(ioc, 5ms);
  REQUIRE(p->done);
  CHECK(*p->value == 1);
  REQUIRE(seen.size() == 2);
  CHECK(seen[0] == std::optional<ns>(100ms));
  CHECK(seen[1] == std::optional<ns>(95ms));
}

TEST_CASE("retry: delays saturate at nanoseconds::max(), never negative") {
  using std::chrono::nanoseconds;
  constexpr auto forever = nanoseconds::max();
  for (const auto jitter :
       {jitter_kind::none, jitter_kind::full, jitter_kind::equal, jitter_kind::decorrelated}) {
    CAPTURE(static_cast<int>(jitter));
    // max_delay = max(): the base doubles past 2^63 ns and is capped there.
    policy_type growing({.max_attempts = 200,
                         .initial_delay = 1ms,
                         .max_delay = forever,
                         .jitter = jitter,
                         .seed = 7});
    auto s = growing.schedule();
    nanoseconds last{};
    for (int i = 0; i < 150; ++i) {
      last = s.next();
      REQUIRE(last >= 0ns);
    }
    if (jitter == jitter_kind::none) CHECK(last == forever);
    // initial_delay = max_delay = max(): every delay is "for ever" (or a
    // fraction of it, with jitter).
    policy_type longest(
        {.initial_delay = forever, .max_delay = forever, .jitter = jitter, .seed = 7});
    auto l = longest.schedule();
    for (int i = 0; i < 5; ++i) {
      const auto d = l.next();
      REQUIRE(d >= 0ns);
      if (jitter == jitter_kind::none || jitter == jitter_kind::decorrelated) CHECK(d == forever);
    }
  }
  // A zero initial delay stays zero however far the multiplier grows it.
  policy_type zero({.max_attempts = 1000,
                    .initial_delay = 0ns,
                    .multiplier = 100,
                    .max_delay = 1s,
                    .jitter = jitter_kind::none});
  auto z = zero.schedule();
  for (int i = 0; i < 500; ++i) REQUIRE(z.next() == 0ns);
  // A Retry-After hint of any size is capped by max_retry_after = max().
  policy_type hinted({.max_retry_after = forever,
                      .retry_after = [](const levee::call_result&) -> std::optional<nanoseconds> {
                        return nanoseconds::max();
                      }});
  auto h = hinted.schedule();
  CHECK(h.next() == forever);
}

TEST_CASE("retry: a delay of nanoseconds::max() waits for ever, not at once") {
  virtual_time vt;
  asio::io_context ioc;
  policy_type policy({.max_attempts = 3,
                      .initial_delay = std::chrono::nanoseconds::max(),
                      .max_delay = std::chrono::nanoseconds::max(),
                      .jitter = jitter_kind::none});
  flaky api;
  auto r = spawn(ioc, levee::retry(policy, [&] { return api.call_ec(); }));
  for (int i = 0; i < 100; ++i) elapse(ioc, 1h);
  CHECK_FALSE(r->done);
  CHECK(api.starts.size() == 1);
  ioc.stop();
}

TEST_CASE("retry: a budget with ttl = nanoseconds::max() works (no overflow)") {
  levee::retry_budget budget(
      {.ratio = 10, .min_retries_per_second = 1e9, .ttl = std::chrono::nanoseconds::max()});
  CHECK(budget.try_withdraw(0s));
  budget.deposit(1s);
  CHECK(budget.try_withdraw(std::chrono::hours(24 * 365 * 200)));
  const auto s = budget.state(std::chrono::hours(24 * 365 * 200));
  CHECK(s.retries == 2);
  CHECK(s.successes == 1);
  CHECK(s.available > 0);
}

TEST_CASE("retry: metrics count attempts, retries, budget refusals and exhausted operations") {
  virtual_time vt;
  asio::io_context ioc;
  auto budget = std::make_shared<levee::retry_budget>(
      levee::retry_budget_options{.ratio = 0, .min_retries_per_second = 0.2, .ttl = 10s});
  policy_type policy(
      {.max_attempts = 3, .initial_delay = 10ms, .jitter = jitter_kind::none, .budget = budget});
  CHECK(policy.metrics().attempts == 0);

  flaky api;  // always fails
  // The floor grants 2 retries per 10 s: the first operation takes both and
  // gives up after its third attempt (exhausted); the second gets none.
  auto first = run_to_end(ioc, levee::retry(policy, [&] { return api.call(); }));
  auto second = run_to_end(ioc, levee::retry(policy, [&] { return api.call(); }));
  REQUIRE(first->done);
  REQUIRE(second->done);
  auto m = policy.metrics();
  CHECK(m.operations == 2);
  CHECK(m.attempts == 4);
  CHECK(m.retries == 2);
  CHECK(m.budget_refusals == 1);
  CHECK(m.exhausted == 1);

  // The way back: the dependency answers again, one attempt each, nothing else moves.
  api.failures = 0;
  api.starts.clear();
  auto ok = run_to_end(ioc, levee::retry(policy, [&] { return api.call(); }));
  CHECK(ok->value == 7);
  m = policy.metrics();
  CHECK(m.operations == 3);
  CHECK(m.attempts == 5);
  CHECK(m.retries == 2);
  CHECK(m.budget_refusals == 1);
  CHECK(m.exhausted == 1);
}

TEST_CASE("retry: a non-retryable outcome is neither exhausted nor refused") {
  virtual_time vt;
  asio::io_context ioc;
  policy_type policy({.max_attempts = 3, .initial_delay = 10ms, .jitter = jitter_kind::none});
  flaky api;
  api.error = levee::error::circuit_open;  // a rejection: never retried
  auto r = run_to_end(ioc, levee::retry(policy, [&] { return api.call_ec(); }));
  REQUIRE(r->done);
  const auto m = policy.metrics();
  CHECK(m.attempts == 1);
  CHECK(m.retries == 0);
  CHECK(m.exhausted == 0);
  CHECK(m.budget_refusals == 0);
}

TEST_CASE("retry: the Prometheus exposition of retry metrics passes promtool") {
  levee::retry_metrics m{
      .operations = 3, .attempts = 5, .retries = 2, .budget_refusals = 1, .exhausted = 1};
  std::ostringstream out;
  levee::write_retry_prometheus(out, {{"api \"v2\"", m}, {"db", {}}});
  const std::string text = out.str();
  CHECK(text.find("# TYPE levee_retry_attempts_total counter\n") != std::string::npos);
  CHECK(text.find("levee_retry_attempts_total{policy=\"api \\\"v2\\\"\"} 5\n") !=
        std::string::npos);
  CHECK(text.find("levee_retry_retries_total{policy=\"api \\\"v2\\\"\"} 2\n") != std::string::npos);
  CHECK(text.find("levee_retry_budget_refusals_total{policy=\"api \\\"v2\\\"\"} 1\n") !=
        std::string::npos);
  CHECK(text.find("levee_retry_exhausted_total{policy=\"api \\\"v2\\\"\"} 1\n") !=
        std::string::npos);
  CHECK(text.find("levee_retry_operations_total{policy=\"db\"} 0\n") != std::string::npos);
  CHECK(levee_test::promtool_clean(text));
}
