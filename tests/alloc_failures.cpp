// Every allocation of a call failing in turn: a hedged call, a race (its
// call answering and its timer winning), a hedged call to an upstream. For each n, the n-th
// allocation from the call's start throws std::bad_alloc (operator new) or returns null
// (aligned_alloc, which Asio's recycling allocator and levee's block cache call), once; the run
// goes on until the call's allocations all passed.
//
// What each run must show: the caller completes (with its result or the
// failure), or the failure came out of the context's run() and the
// caller's frames were destroyed (Asio's own rule when an operation's
// initiation throws after its coroutine suspended), never a caller left
// waiting; nothing is used after it
// was freed (AddressSanitizer, with levee's block cache poisoning its
// blocks); nothing is leaked once the context is gone (LeakSanitizer); and
// afterwards the same objects serve a call as before. Its own target: it
// replaces the global operator new.
#include <levee/hedge/hedge.hpp>
#include <levee/hedge/upstream.hpp>
#include <levee/timeout/detail/strand_pool.hpp>
#include <levee/timeout/timeout.hpp>

#include "replaced_new.hpp"
#include "support.hpp"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#endif

#include <atomic>
#include <cstdlib>
#include <memory>
#include <new>
#include <string>

namespace {

// The allocations left before one fails; -1: none fails.
std::atomic<long> g_fail_in{-1};
std::atomic<long> g_failed{0};

bool fail_now() noexcept {
  long n = g_fail_in.load(std::memory_order_relaxed);
  if (n < 0) return false;
  g_fail_in.store(n - 1, std::memory_order_relaxed);
  if (n > 0) return false;
  g_failed.fetch_add(1, std::memory_order_relaxed);
#if defined(__SANITIZE_ADDRESS__)
  // LEVEE_TRACE_FAILURE=1: where the failing allocation is.
  if (std::getenv("LEVEE_TRACE_FAILURE")) __sanitizer_print_stack_trace();
#endif
  return true;  // once: n - 1 is -1 now
}

void* plain(std::size_t n) {
  if (fail_now()) throw std::bad_alloc();
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* aligned(std::size_t n, std::align_val_t a) {
  if (fail_now()) throw std::bad_alloc();
  const auto al = static_cast<std::size_t>(a);
  if (void* p = std::aligned_alloc(al, (n + al - 1) / al * al)) return p;
  throw std::bad_alloc();
}

}  // namespace

extern "C" void* __real_aligned_alloc(std::size_t alignment, std::size_t size);
extern "C" void* __wrap_aligned_alloc(std::size_t alignment, std::size_t size) {
  if (fail_now()) return nullptr;
  return __real_aligned_alloc(alignment, size);
}

void* levee_test_new(std::size_t n) {
  return plain(n);
}
void* levee_test_new_aligned(std::size_t n, std::align_val_t a) {
  return aligned(n, a);
}

using namespace levee_test;
using ec_t = boost::system::error_code;

namespace {

/// How one run with one failing allocation went.
struct run_result {
  bool injected = false;   // an allocation failed
  bool completed = false;  // the caller's completion ran
  bool failed = false;     // ... with an exception (the bad_alloc, or what it became)
  int value = 0;           // ... or with this value
  int escaped = 0;         // failures that came out of run()
  bool gone = false;       // the caller's frames are gone (resumed to its end, or destroyed)
};

/// The caller: `aw`, with a mark set when its frame goes, whether it
/// returned or Asio destroyed it (a caller that neither completes nor goes
/// is one left waiting for good).
asio::awaitable<int> watched(asio::awaitable<int> aw, std::shared_ptr<run_result> r) {
  struct mark {
    run_result* r;
    ~mark() { r->gone = true; }
  } m{r.get()};
  co_return co_await std::move(aw);
}

/// Runs `body` on `ioc` with the `n`-th allocation from now failing, for
/// `steps` steps of 1 ms of virtual time; then, with nothing failing, runs
/// what is left.
///
/// A strand is leased and given back first, so that the context's pool
/// holds one: Boost 1.81's Asio cannot make a strand when an allocation
/// fails (`strand_executor_service::create_implementation` destroys a
/// `strand_impl` whose service pointer was never set when the
/// `shared_ptr`'s control block or a mutex cannot be allocated: a crash),
/// so the calls here take a strand from the pool instead.
template <class Body>
run_result run_failing(asio::io_context& ioc, long n, int steps, Body body) {
  { levee::detail::strand_lease<asio::any_io_executor> warm(ioc.get_executor()); }
  auto r = std::make_shared<run_result>();
  g_failed = 0;
  g_fail_in = n;
  try {
    asio::co_spawn(ioc, watched(body(), r), [r](std::exception_ptr e, int v) {
      r->completed = true;
      r->failed = e != nullptr;
      r->value = v;
    });
  } catch (const std::bad_alloc&) {
    ++r->escaped;
    r->gone = true;  // never started
  }
  for (int i = 0; i <= steps; ++i) {
    try {
      elapse(ioc, i == 0 ? 0ms : 1ms);
    } catch (const std::bad_alloc&) {
      ++r->escaped;
    }
  }
  g_fail_in = -1;
  r->injected = g_failed > 0;
  for (int i = 0; i < steps; ++i) elapse(ioc, 1ms);
  return *r;
}

/// Runs `once(n)` for n = 0, 1, ... until a run has no failing allocation;
/// each must have completed, or let the failure out of run() with its
/// caller's frames destroyed. \return the
/// number of runs with a failure.
template <class Once>
long every_failure(Once once) {
  long n = 0;
  for (;; ++n) {
    INFO("allocation " << n << " fails");
    const run_result r = once(n);
    if (!r.injected) {
      CHECK(r.completed);
      CHECK_FALSE(r.failed);
      break;
    }
    // Completed, or the failure came out of run() and the caller's frames
    // were destroyed: never a caller left waiting.
    INFO("completed " << r.completed << ", escaped " << r.escaped << ", gone " << r.gone);
    CHECK((r.completed || (r.escaped > 0 && r.gone)));
    REQUIRE(n < 100'000);
  }
  return n;
}

/// A downstream call that answers `v` after `latency` of virtual time.
asio::awaitable<std::tuple<ec_t, int>> answer(std::chrono::nanoseconds latency, int v) {
  timer t(co_await asio::this_coro::executor, latency);
  auto [ec] = co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
  co_return std::tuple(ec, ec ? 0 : v);
}

}  // namespace

TEST_CASE("allocation failures: a hedged call, its hedge started and the loser cancelled") {
  // The first attempt answers at 10 ms, the hedge (from 5 ms) would at
  // 15 ms: it is cancelled.
  const long runs = every_failure([](long n) {
    virtual_time vt;
    asio::io_context ioc;
    levee::basic_hedge<vclock> h(ioc, {.max_attempts = 2, .delay = 5ms});
    int attempts = 0;
    auto factory = [&attempts] { return answer(10ms, ++attempts); };
    auto body = [&]() -> asio::awaitable<int> {
      auto [ec, v] = co_await h(factory);
      co_return ec ? -1 : v;
    };
    const run_result r = run_failing(ioc, n, 30, body);
    // The first attempt's answer, or the hedge's when the failure took the
    // first attempt (Asio dropped its thread: it counts as failed).
    if (r.completed && !r.failed) CHECK((r.value == 1 || r.value == 2));
    // The same hedge serves the next call as before.
    attempts = 0;
    auto again = spawn(ioc, body());
    settle(ioc);
    for (int i = 0; i < 30 && !again->done; ++i) elapse(ioc, 1ms);
    CHECK(again->value == 1);
    return r;
  });
  CHECK(runs > 5);
}

TEST_CASE("allocation failures: a race whose call answers, and one whose timer wins") {
  for (const bool timer_wins : {false, true}) {
    INFO("the timer wins: " << timer_wins);
    const long runs = every_failure([timer_wins](long n) {
      virtual_time vt;
      asio::io_context ioc;
      auto body = [timer_wins]() -> asio::awaitable<int> {
        auto [ec, v] = co_await levee::with_timeout<vclock>(10ms, answer(timer_wins ? 1s : 5ms, 7));
        co_return ec == levee::error::timeout ? -2 : ec ? -1 : v;
      };
      // 1.1 s when the timer wins: a failure that takes the timer's own
      // completion (Asio drops the handler: the limit is not enforced) leaves
      // the call to end on its own, at 1 s, and the caller resumes then.
      const run_result r = run_failing(ioc, n, timer_wins ? 1'100 : 30, body);
      if (r.completed && !r.failed) CHECK((r.value == (timer_wins ? -2 : 7) || r.value == 7));
      return r;
    });
    CHECK(runs > 5);
  }
}

TEST_CASE("allocation failures: a hedged call to an upstream, its attempts on two endpoints") {
  // The first attempt's endpoint answers at 30 ms, the hedge (from 10 ms)
  // goes to another endpoint and answers at 15 ms: it wins. The attempts
  // share the endpoints they picked (levee::hedged_call).
  const long runs = every_failure([](long n) {
    virtual_time vt;
    asio::io_context ioc;
    levee::basic_upstream<vclock> up(ioc, {"a", "b", "c"});
    levee::basic_hedge<vclock> h(ioc, {.max_attempts = 2, .delay = 10ms});
    int attempts = 0;
    auto fn = [&attempts](const levee::upstream_endpoint&) {
      const int k = ++attempts;
      return answer(k == 1 ? 30ms : 5ms, k);
    };
    auto body = [&]() -> asio::awaitable<int> {
      auto [ec, v] = co_await levee::hedged_call(h, up, fn);
      co_return ec ? -1 : v;
    };
    const run_result r = run_failing(ioc, n, 60, body);
    // An attempt's answer: the hedge's; the first attempt's when the failure
    // took the hedge (its timer not armed: the call goes on without hedges);
    // or a retry's, on another endpoint, when it took an attempt.
    if (r.completed && !r.failed) CHECK(r.value >= 1);
    // The way back: the same upstream and hedge serve the next call, and no
    // endpoint was ejected for what the failure did.
    attempts = 0;
    auto again = spawn(ioc, body());
    settle(ioc);
    for (int i = 0; i < 60 && !again->done; ++i) elapse(ioc, 1ms);
    CHECK(again->value == 2);
    CHECK(up.metrics().ejected == 0);
    return r;
  });
  CHECK(runs > 5);
}
