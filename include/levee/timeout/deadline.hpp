/// \file
/// The deadline of the `with_deadline` a coroutine runs in, carried by the
/// coroutine's executor, so that an operation it starts (levee's HTTP client)
/// can read what is left of it and send it downstream.
#pragma once

#include <levee/core/detail/block_cache.hpp>
#include <levee/core/detail/saturating.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/prefer.hpp>
#include <boost/asio/query.hpp>
#include <boost/asio/require.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>

#include <chrono>
#include <memory>
#include <optional>
#include <type_traits>
#include <utility>

namespace levee {

/// A point in time on some clock, and that clock's `now`: how long is left
/// can be asked on any thread, whichever clock `with_deadline` ran on
/// (`steady_clock`, or `manual_clock` in tests).
struct deadline_mark {
  /// The deadline, since the clock's epoch.
  std::chrono::nanoseconds at = std::chrono::nanoseconds::max();
  /// The clock's `now()`, since its epoch.
  std::chrono::nanoseconds (*now)() = nullptr;

  /// What is left now: `at - now()` (negative once passed); `max()` when
  /// there is no deadline.
  /// \return the time left, saturated.
  std::chrono::nanoseconds remaining() const noexcept {
    if (now == nullptr || at == std::chrono::nanoseconds::max())
      return std::chrono::nanoseconds::max();
    return detail::saturating_add(at, -now());
  }
  friend bool operator==(const deadline_mark&, const deadline_mark&) = default;
};

/// An executor that runs everything on `Inner` and carries a deadline.
///
/// `with_deadline` runs its operation on one (its `this_coro::executor`, and
/// so the associated executor of every handler the operation's coroutines
/// make), wrapped in the caller's `any_io_executor`: the deadline is
/// coroutine-local by construction, never a thread-local that another
/// coroutine resumed on the same thread could see. Every property (the
/// context, blocking, outstanding work, relationship, allocator) is
/// `Inner`'s; `require` and `prefer` give `Inner`'s executor, without the
/// deadline: Asio uses them to post, dispatch and track work, never as a
/// coroutine's executor.
///
/// It holds one `shared_ptr` (16 bytes), so an `any_io_executor` stores it
/// inline (its buffer holds 24); copies share one immutable state, taken
/// from levee's per-thread block cache (no `operator new` once warm).
template <class Inner>
class deadline_executor {
 public:
  /// \param inner Where the work runs (a strand, for `with_deadline`).
  /// \param mark The deadline it carries.
  deadline_executor(Inner inner, deadline_mark mark)
      : state_(std::allocate_shared<const state>(detail::cached_allocator<state>(),
                                                 state{std::move(inner), mark})) {}

  /// \return the executor the work runs on.
  const Inner& inner() const noexcept { return state_->inner; }
  /// \return the deadline carried.
  deadline_mark mark() const noexcept { return state_->mark; }

  /// `Inner`'s property.
  /// \param p The property.
  /// \return `asio::query(inner(), p)`.
  template <class Property>
  requires boost::asio::can_query<const Inner&, const Property&>::value decltype(auto) query(
      const Property& p) const
      noexcept(boost::asio::is_nothrow_query<const Inner&, const Property&>::value) {
    return boost::asio::query(state_->inner, p);
  }
  /// `Inner` with the property (no deadline: see the class).
  /// \param p The property.
  /// \return `asio::require(inner(), p)`.
  template <class Property>
  requires boost::asio::can_require<const Inner&, const Property&>::value auto require(
      const Property& p) const {
    return boost::asio::require(state_->inner, p);
  }
  /// `Inner` with the property if it can (no deadline: see the class).
  /// \param p The property.
  /// \return `asio::prefer(inner(), p)`.
  template <class Property>
  requires boost::asio::can_prefer<const Inner&, const Property&>::value auto prefer(
      const Property& p) const {
    return boost::asio::prefer(state_->inner, p);
  }
  /// Runs `f` on `Inner`.
  /// \param f The function.
  template <class F>
  void execute(F&& f) const {
    state_->inner.execute(std::forward<F>(f));
  }
  friend bool operator==(const deadline_executor& a, const deadline_executor& b) noexcept {
    return a.state_ == b.state_ ||
           (a.state_->inner == b.state_->inner && a.state_->mark == b.state_->mark);
  }
  friend bool operator!=(const deadline_executor& a, const deadline_executor& b) noexcept {
    return !(a == b);
  }

 private:
  struct state {
    Inner inner;
    deadline_mark mark;
  };
  std::shared_ptr<const state> state_;
};

namespace detail {

/// The deadline `ex` carries, when it is one of the deadline executors
/// `with_deadline` makes (on a strand of an `io_context`, of a
/// `thread_pool`, or of a type-erased executor).
inline std::optional<deadline_mark> find_deadline(const boost::asio::any_io_executor& ex) noexcept {
  namespace asio = boost::asio;
  if (!ex) return std::nullopt;
  using io_strand = asio::strand<asio::io_context::executor_type>;
  using pool_strand = asio::strand<asio::thread_pool::executor_type>;
  using any_strand = asio::strand<asio::any_io_executor>;
  if (const auto* d = ex.target<deadline_executor<io_strand>>()) return d->mark();
  if (const auto* d = ex.target<deadline_executor<pool_strand>>()) return d->mark();
  if (const auto* d = ex.target<deadline_executor<any_strand>>()) return d->mark();
  return std::nullopt;
}

/// `Clock::now()` since its epoch, in nanoseconds.
template <class Clock>
std::chrono::nanoseconds clock_now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch());
}

/// `ex` (a strand `serial_executor` made, perhaps already carrying a
/// deadline) carrying the earlier of its deadline and `mark`. Executors
/// that cannot carry one are returned unchanged.
template <class Executor>
Executor carry_mark(const Executor& ex, const deadline_mark& mark) {
  namespace asio = boost::asio;
  if constexpr (std::is_same_v<Executor, asio::any_io_executor>) {
    if (auto outer = find_deadline(ex); outer && outer->remaining() <= mark.remaining()) return ex;
    auto rewrap = [&]<class Strand>(std::type_identity<Strand>) -> std::optional<Executor> {
      if (const auto* s = ex.template target<Strand>())
        return Executor(deadline_executor<Strand>(*s, mark));
      if (const auto* d = ex.template target<deadline_executor<Strand>>())
        return Executor(deadline_executor<Strand>(d->inner(), mark));
      return std::nullopt;
    };
    if (auto r = rewrap(std::type_identity<asio::strand<asio::io_context::executor_type>>{}))
      return *r;
    if (auto r = rewrap(std::type_identity<asio::strand<asio::thread_pool::executor_type>>{}))
      return *r;
    if (auto r = rewrap(std::type_identity<asio::strand<asio::any_io_executor>>{})) return *r;
  }
  return ex;
}

/// `ex` (a strand `serial_executor` made, perhaps already carrying a
/// deadline) carrying the earlier of its deadline and `limit` from now on
/// `Clock`. Executors that cannot carry one are returned unchanged.
template <class Clock, class Executor>
Executor carry_deadline(const Executor& ex, std::chrono::nanoseconds limit) {
  if constexpr (std::is_same_v<Executor, boost::asio::any_io_executor>) {
    return carry_mark(
        ex, deadline_mark{saturating_add(clock_now_ns<Clock>(), limit), &clock_now_ns<Clock>});
  }
  return ex;
}

}  // namespace detail

/// What is left of the deadline of the `with_deadline` whose operation runs
/// on `ex` (inside a coroutine: `co_await asio::this_coro::executor`; in a
/// completion handler: its associated executor). Nested `with_deadline`s:
/// the earliest. Empty when `ex` carries none (not inside `with_deadline`, or
/// an executor type other than `any_io_executor`, which cannot carry one).
/// \param ex The executor.
/// \return the time left (negative once passed), or nothing.
inline std::optional<std::chrono::nanoseconds> remaining_deadline(
    const boost::asio::any_io_executor& ex) noexcept {
  if (auto m = detail::find_deadline(ex)) return m->remaining();
  return std::nullopt;
}

}  // namespace levee
