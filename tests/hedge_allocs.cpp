// The hedge's fast path, and a call through two of levee's layers, allocate
// nothing once warm: every operator new of this program is counted (its own
// target, as the replacement is global).
//
// What this counts: operator new, and aligned_alloc (linked with
// -Wl,--wrap=aligned_alloc: Asio's recycling allocator calls it when its
// thread's two cached blocks for a purpose do not fit).
#include <levee/breaker/circuit_breaker.hpp>
#include <levee/hedge/hedge.hpp>
#include <levee/limit/adaptive_limit.hpp>
#include <levee/limit/bulkhead.hpp>
#include <levee/limit/rate_limiter.hpp>
#include <levee/limit/throttle.hpp>

#include "support.hpp"

#include <atomic>
#include <cstdlib>
#include <new>

namespace {
std::atomic<std::uint64_t> g_news{0};
std::atomic<std::uint64_t> g_aligned{0};

void* counted(std::size_t n) {
  g_news.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* counted_aligned(std::size_t n, std::align_val_t a) {
  g_news.fetch_add(1, std::memory_order_relaxed);
  const auto al = static_cast<std::size_t>(a);
  if (void* p = std::aligned_alloc(al, (n + al - 1) / al * al)) return p;
  throw std::bad_alloc();
}
}  // namespace

extern "C" void* __real_aligned_alloc(std::size_t alignment, std::size_t size);
extern "C" void* __wrap_aligned_alloc(std::size_t alignment, std::size_t size) {
  g_aligned.fetch_add(1, std::memory_order_relaxed);
  return __real_aligned_alloc(alignment, size);
}

// Every form, so that no block from the sanitizer's own new reaches free.
void* operator new(std::size_t n) {
  return counted(n);
}
void* operator new[](std::size_t n) {
  return counted(n);
}
void* operator new(std::size_t n, std::align_val_t a) {
  return counted_aligned(n, a);
}
void* operator new[](std::size_t n, std::align_val_t a) {
  return counted_aligned(n, a);
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return counted(n);
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return counted(n);
  } catch (...) {
    return nullptr;
  }
}
void operator delete(void* p) noexcept {
  std::free(p);
}
void operator delete[](void* p) noexcept {
  std::free(p);
}
void operator delete(void* p, std::size_t) noexcept {
  std::free(p);
}
void operator delete[](void* p, std::size_t) noexcept {
  std::free(p);
}
void operator delete(void* p, const std::nothrow_t&) noexcept {
  std::free(p);
}
void operator delete[](void* p, const std::nothrow_t&) noexcept {
  std::free(p);
}
void operator delete(void* p, std::align_val_t) noexcept {
  std::free(p);
}
void operator delete[](void* p, std::align_val_t) noexcept {
  std::free(p);
}
void operator delete(void* p, std::size_t, std::align_val_t) noexcept {
  std::free(p);
}
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept {
  std::free(p);
}

using namespace levee_test;

namespace {

asio::awaitable<int> answer(int x) {
  co_return x + 1;
}

}  // namespace

// Asio's recycling allocator keeps two blocks per thread and purpose. A hedged
// call has more of Asio's coroutine frames alive at once (the call's, the
// attempt's co_spawn entry and dispatch, the attempt's, the breaker's, the
// operation's), and those miss it: 5 a call. Its own state came from the same
// allocator, pushed out by the strand's operations, and its initiation was a
// frame too (use_awaitable): 9 a call before.
TEST_CASE("hedge: a call answered before the delay allocates nothing of its own once warm") {
  virtual_time vt;
  asio::io_context ioc;
  breaker b(ioc);
  levee::basic_hedge<vclock> h(ioc, {.delay = 50ms});
  constexpr int warm = 16;
  constexpr int calls = 1000;
  std::uint64_t news = 0;
  std::uint64_t aligned = 0;
  int x = 0;
  auto body = [&]() -> asio::awaitable<int> {
    for (int i = 0; i < warm + calls; ++i) {
      if (i == warm) {
        news = g_news.load();
        aligned = g_aligned.load();
      }
      x = co_await h([&] { return b(answer(x)); });
    }
    news = g_news.load() - news;
    aligned = g_aligned.load() - aligned;
    co_return x;
  };
  auto p = spawn(ioc, body());
  settle(ioc);
  REQUIRE(p->done);
  CHECK(x == warm + calls);
  CHECK(news == 0);
  const double per_call = static_cast<double>(aligned) / calls;
  INFO("aligned_alloc per call: " << per_call);
  CHECK(per_call <= 3.0);
  const auto m = h.metrics();
  CHECK(m.calls == warm + calls);
  CHECK(m.hedges == 0);
}

namespace {

// `calls` calls of `guard(answer(x))` after `warm` ones, one after the other
// in one coroutine: the operator new and aligned_alloc calls they made.
template <class Guard>
std::pair<std::uint64_t, std::uint64_t> allocations_of(asio::io_context& ioc, Guard&& guard) {
  constexpr int warm = 16;
  constexpr int calls = 1000;
  std::uint64_t news = 0;
  std::uint64_t aligned = 0;
  int x = 0;
  auto body = [&]() -> asio::awaitable<int> {
    for (int i = 0; i < warm + calls; ++i) {
      if (i == warm) {
        news = g_news.load();
        aligned = g_aligned.load();
      }
      x = co_await guard(answer(x));
    }
    news = g_news.load() - news;
    aligned = g_aligned.load() - aligned;
    co_return x;
  };
  auto p = spawn(ioc, body());
  settle(ioc);
  REQUIRE(p->done);
  CHECK(x == warm + calls);
  return {news, aligned};
}

}  // namespace

// Asio keeps two blocks per thread for coroutine frames. A call through two
// layers has three frames alive at once (the outer layer's, the breaker's,
// the call's): one of them came from aligned_alloc on every call (1,000 of
// 1,000 calls before levee's frames came from its own block cache,
// core/detail/own_frame.hpp). The caller's loop frame lives throughout.
TEST_CASE("layers: a call through two of levee's layers allocates nothing once warm") {
  virtual_time vt;
  asio::io_context ioc;
  breaker b(ioc);
  SECTION("throttle(breaker(call))") {
    levee::basic_throttle<vclock> t(ioc);
    const auto [news, aligned] = allocations_of(ioc, [&](auto aw) { return t(b(std::move(aw))); });
    CHECK(news == 0);
    CHECK(aligned == 0);
  }
  SECTION("breaker(adaptive limit(call))") {
    levee::basic_adaptive_limit<vclock> l(ioc);
    const auto [news, aligned] = allocations_of(ioc, [&](auto aw) { return b(l(std::move(aw))); });
    CHECK(news == 0);
    CHECK(aligned == 0);
  }
  SECTION("rate limiter(breaker(call))") {
    levee::basic_rate_limiter<vclock> r(ioc, {.rate = 1'000'000, .burst = 1'000'000});
    const auto [news, aligned] = allocations_of(ioc, [&](auto aw) { return r(b(std::move(aw))); });
    CHECK(news == 0);
    CHECK(aligned == 0);
  }
  SECTION("bulkhead(breaker(call))") {
    levee::basic_bulkhead<vclock> k(ioc, {.max_concurrent = 4});
    const auto [news, aligned] = allocations_of(ioc, [&](auto aw) { return k(b(std::move(aw))); });
    CHECK(news == 0);
    CHECK(aligned == 0);
  }
}
