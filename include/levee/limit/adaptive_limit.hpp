/// \file
/// An adaptive concurrency limit, the limit of levee's composition
/// order that moves with the downstream's latency.
#pragma once

#include <levee/breaker/detail/window_clock.hpp>
#include <levee/core/classify.hpp>
#include <levee/core/detail/own_frame.hpp>
#include <levee/core/detail/result_shape.hpp>
#include <levee/core/detail/validate.hpp>
#include <levee/core/error.hpp>
#include <levee/limit/adaptive_limit_options.hpp>
#include <levee/limit/detail/adaptive_limit_state.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace levee {

/// A snapshot of an adaptive limit.
struct adaptive_limit_metrics {
  double limit = 0;                    ///< the current limit (calls admitted at once: its floor)
  double min_limit_seen = 0;           ///< lowest limit so far
  double max_limit_seen = 0;           ///< highest limit so far
  std::size_t in_flight = 0;           ///< calls running now
  std::size_t peak_in_flight = 0;      ///< most calls ever running at once
  std::size_t queued = 0;              ///< calls waiting for room now
  std::uint64_t admitted = 0;          ///< calls started
  std::uint64_t limited = 0;           ///< calls rejected with `limit_exceeded`
  std::uint64_t samples = 0;           ///< outcomes the limit learned from (all but ignored ones)
  std::uint64_t drops = 0;             ///< of which drops (failures, timeouts)
  std::uint64_t events_lost = 0;       ///< events a listener missed: a post that failed to allocate
  std::uint64_t reconfigurations = 0;  ///< times `reconfigure` applied new options
};

/// What a limit tells its listeners. The values are bits, for a mask.
enum class limit_event_kind : std::uint32_t {
  /// The limit moved by at least one call, from `from` to `to`. A listener
  /// gets them in order: each starts where the one before ended (changes
  /// made at once on several threads may come as one event).
  changed = 1,
  limited = 2,  ///< a call was rejected with `limit_exceeded`
  /// `reconfigure` applied new options (`from`: the limit before, `to`: the
  /// limit after, clamped to the new bounds); docs/reconfigure.md
  reconfigured = 4,
};
/// Every `limit_event_kind` bit.
inline constexpr std::uint32_t all_limit_events = 7;

/// One event, as a listener receives it.
struct limit_event {
  /// What happened.
  limit_event_kind kind = limit_event_kind::changed;
  double from = 0;                             ///< changed: the limit before
  double to = 0;                               ///< changed: the limit now; limited: the limit
  std::size_t in_flight = 0;                   ///< calls running when it happened
  std::chrono::system_clock::time_point when;  ///< wall-clock time of the event
  std::string_view limit;                      ///< the limit's name, "" when unnamed
};
/// A limit's listener. It runs on the executor given when it was added (by
/// default the limit's), never inside the limit nor under its lock.
using limit_listener = std::function<void(const limit_event&)>;

/// An adaptive limit's metrics with its name, for the Prometheus exposition.
struct named_limit_metrics {
  std::string name;                ///< the value of its label `limit` (unique)
  adaptive_limit_metrics metrics;  ///< its snapshot
};

/// Writes limits' metrics in the Prometheus text exposition format 0.0.4, one
/// sample per limit (label `limit`, escaped and valid UTF-8 as for breakers):
///
/// | Metric | Type |
/// |---|---|
/// | `levee_limit` | gauge: the current limit |
/// | `levee_limit_in_flight` | gauge |
/// | `levee_limit_queued` | gauge |
/// | `levee_limit_admitted_calls_total` | counter |
/// | `levee_limit_rejected_calls_total` | counter (`limit_exceeded`) |
/// | `levee_limit_samples_total` | counter |
/// | `levee_limit_drops_total` | counter (samples that were failures) |
/// | `levee_limit_events_lost_total` | counter (events a listener missed: a post failed to
/// allocate) |
/// | `levee_limit_reconfigurations_total` | counter |
///
/// \param out Where the text goes.
/// \param limits The limits, in the order their samples are written.
void write_limits_prometheus(std::ostream& out, const std::vector<named_limit_metrics>& limits);

namespace detail {
struct guard_access;
}  // namespace detail

/// An adaptive concurrency limit: at most `limit()` guarded calls run at
/// once, and the limit follows the downstream: it grows while calls come back
/// as fast as usual and shrinks when they slow down (Gradient2) or fail
/// (AIMD), within [min_limit, max_limit]. A call over the limit fails at once
/// with `error::limit_exceeded` (condition `rejected`: never retried by
/// `default_retryable`), or waits in a short FIFO queue if `max_queue` is set.
///
/// `co_await limit(call())` returns `call()`'s result unchanged; a rejection
/// throws `boost::system::system_error`, or, for a `std::tuple<error_code,
/// U...>` result, returns `{error::limit_exceeded, U{}...}`.
///
/// Each call is one sample: its round trip (one clock read at admission, one
/// at completion; Gradient2 times a sample of the calls of a busy window,
/// docs/limits.md), the calls in flight when it started, and its outcome. A
/// cancelled call frees its slot and is not a sample; a failure, and a
/// timeout from `with_timeout` inside the limit, is a drop: a loss for AIMD,
/// no round trip for Gradient2 (a call refused in 1 ms says nothing of how
/// long a served one takes), so an outage of fast failures leaves
/// Gradient2's limit where it was (README, "The adaptive concurrency limit").
///
/// Hot path: O(1), no allocation, one short lock at admission and one at
/// completion (plain arithmetic), none held across the call. Thread safety:
/// shared freely between threads of a multi-threaded `io_context`. Pending
/// work: none of its own (an idle limiter arms no timer; a waiter with
/// `max_wait` has a timer while it waits). Lifetime: may be destroyed with
/// calls in flight or waiting (waiters end with `operation_aborted`; calls
/// running finish on its state, which goes with the last of them). A call
/// must be *started* (its awaitable first awaited) before the limit is
/// destroyed, not after it nor concurrently with it, as with a breaker or a
/// throttle: its frame holds the state by address, counted in and out under
/// the limit's own spinlock (docs/limits.md, "Cost, observability, one
/// limit per host").
///
/// `Clock` times round trips and `max_wait`. `adaptive_limit` is the
/// steady_clock limit.
template <class Clock = std::chrono::steady_clock>
class basic_adaptive_limit {
 public:
  /// The type of `get_executor()`.
  using executor_type = boost::asio::any_io_executor;

  /// A limit whose listeners run on `ex` by default.
  /// \param ex The limit's executor (anything `any_io_executor` accepts).
  /// \param options How the limit moves; validated (`validate`).
  /// \param name Labels its events and its Prometheus series ("": unnamed).
  /// \throws std::invalid_argument naming the member when `options` is invalid.
  template <class Executor>
  requires std::is_convertible_v<const Executor&, executor_type>
  explicit basic_adaptive_limit(const Executor& ex, adaptive_limit_options options = {},
                                std::string name = {})
      : executor_(ex),
        state_(detail::adaptive_limit_state::make(detail::checked(std::move(options)),
                                                  std::move(name))) {}

  /// A limit on `ctx.get_executor()`.
  /// \param ctx An execution context, such as an `io_context`.
  /// \param options How the limit moves; validated (`validate`).
  /// \param name Labels its events and its Prometheus series ("": unnamed).
  /// \throws std::invalid_argument naming the member when `options` is invalid.
  template <class ExecutionContext>
  requires std::is_convertible_v<ExecutionContext&, boost::asio::execution_context&>
  explicit basic_adaptive_limit(ExecutionContext& ctx, adaptive_limit_options options = {},
                                std::string name = {})
      : basic_adaptive_limit(ctx.get_executor(), std::move(options), std::move(name)) {}

  basic_adaptive_limit(const basic_adaptive_limit&) = delete;
  basic_adaptive_limit& operator=(const basic_adaptive_limit&) = delete;
  /// Calls waiting in the queue end with `operation_aborted`; calls running
  /// finish on the state they share (see Lifetime).
  ~basic_adaptive_limit() { state_->close(); }

  /// The limit's executor.
  /// \return the executor given at construction.
  executor_type get_executor() const noexcept { return executor_; }
  /// The options in force: the constructor's, or the last `reconfigure`'s.
  /// \return them, as validated; valid as long as the limit's state (a
  /// reconfiguration keeps the options it replaced).
  const adaptive_limit_options& options() const noexcept { return state_->options(); }

  /// Applies new options to the running limit (docs/reconfigure.md),
  /// thread-safe against calls in flight and waiting on any thread. The
  /// limit keeps the value it learned, clamped to the new
  /// [min_limit, max_limit] (`initial_limit` is not applied again), and with
  /// the same algorithm what it learned (Gradient2's long-term round trip
  /// and current window); a new algorithm starts from that value. A lower
  /// limit cancels no call: calls running finish, and nothing more is
  /// admitted until fewer than the limit run; a higher one admits waiters
  /// at once. A lower `max_queue` cancels no waiter; a waiter keeps the
  /// `max_wait` it started with. A call completing later is classified by
  /// the classifier in force then. Emits `reconfigured` (and `changed` if the
  /// limit moved); `metrics().reconfigurations` goes up.
  /// \param options The new options; validated as by the constructor.
  /// \throws std::invalid_argument naming the member when `options` is
  /// invalid; nothing changes then.
  void reconfigure(const adaptive_limit_options& options) { state_->reconfigure(options); }
  /// The current limit.
  /// \return the limit now (calls admitted at once: its floor).
  double limit() const { return metrics().limit; }
  /// The calls running now.
  /// \return the calls admitted and not finished.
  std::size_t in_flight() const noexcept { return state_->in_flight(); }
  /// A snapshot of the limit.
  /// \return the snapshot, taken now.
  adaptive_limit_metrics metrics() const { return state_->metrics(); }
  /// The limit's name.
  /// \return the name given at construction, "" if none.
  const std::string& name() const noexcept { return state_->name(); }

  /// Adds a listener for the events in `mask` (`limit_event_kind` bits),
  /// posted to `ex` (by default the limit's executor), never run inside the
  /// limit or under its lock. Without listeners a call pays one relaxed
  /// load; a `limited` listener costs a post per rejection.
  /// \param mask The event kinds it wants (`all_limit_events` for both).
  /// \param fn The listener.
  /// \return an id for `unlisten`.
  std::uint64_t listen(std::uint32_t mask, limit_listener fn) {
    return state_->listen(mask, std::move(fn), executor_);
  }
  /// As `listen(mask, fn)`, the listener invoked on `ex`.
  /// \param mask The event kinds it wants.
  /// \param fn The listener.
  /// \param ex Where it runs.
  /// \return an id for `unlisten`.
  std::uint64_t listen(std::uint32_t mask, limit_listener fn, executor_type ex) {
    return state_->listen(mask, std::move(fn), std::move(ex));
  }
  /// Removes a listener: no event is posted to it after this returns (events
  /// already posted to it are still delivered).
  /// \param id What `listen` returned; an unknown id does nothing.
  void unlisten(std::uint64_t id) { state_->unlisten(id); }

  /// Guards `aw`: `co_await limit(call())`.
  ///
  /// Result: `aw`'s, unchanged, when it runs. A rejection
  /// (`error::limit_exceeded`), or a wait in the queue that ends
  /// (`operation_aborted`, or `limit_exceeded` past `max_wait`), is reported
  /// in the shape of `T`: thrown as `boost::system::system_error`, or
  /// `{ec, U{}...}` when `T` is `std::tuple<error_code, U...>`.
  ///
  /// Cancellation: the awaiting coroutine's cancellation ends a wait in the
  /// queue; once admitted, it reaches `aw` unchanged (a cancelled call is no
  /// sample).
  ///
  /// Executor: `aw` runs on the awaiting coroutine's executor.
  ///
  /// Lifetime: `aw` is moved in; the limit may be destroyed before the
  /// returned awaitable ends, once it has started (see Lifetime above).
  ///
  /// Thread safety: any thread, concurrently with other calls.
  ///
  /// \param aw The call to guard.
  /// \return an awaitable with the same result as `aw`.
  template <class T, class Executor>
  boost::asio::awaitable<T, Executor> operator()(boost::asio::awaitable<T, Executor> aw) {
    return call(detail::own_frame, state_.get(), std::move(aw));
  }

 private:
  // Frees the slot however the call ends, and counts the frame out
  // (detail/adaptive_limit_state.hpp); a sample only through `finish`.
  // Reads the clock only for a call that is timed (`timing`): on the coarse
  // clock for AIMD when `aimd_timeout` is far above its resolution
  // (breaker/detail/window_clock.hpp), else on `Clock`.
  class ticket {
    using timing = detail::adaptive_limit_state::timing;
    using nanos = std::chrono::nanoseconds;

   public:
    ticket(detail::adaptive_limit_state* s, std::size_t started_with, timing t)
        : state_(s),
          started_with_(started_with),
          timing_(t == timing::aimd && detail::coarse_enough<Clock>(state_->options().aimd_timeout)
                      ? timing::coarse
                      : t),
          start_(t == timing::none ? nanos::zero() : now()) {}
    ticket(const ticket&) = delete;
    ticket& operator=(const ticket&) = delete;
    ~ticket() {
      if (state_) state_->leave_frame(false, 0, 0, 0, false);  // abandoned: no sample
    }
    void finish(const call_result& r) noexcept {
      if (!state_) return;  // finished already (a move of the result threw after)
      // A classifier that throws counts the call as a failure.
      const outcome o = state_->classify(r);
      nanos end = nanos::zero();
      double rtt = 1;
      if (timing_ != timing::none) {
        end = now();
        rtt = std::max(static_cast<double>((end - start_).count()), 1.0);
      }
      std::exchange(state_, nullptr)
          ->leave_frame(o != outcome::ignored, end.count(), rtt, started_with_,
                        o == outcome::failure, timing_);
    }

   private:
    nanos now() const noexcept {
      if (timing_ == timing::coarse) return detail::window_now<Clock>();
      return std::chrono::duration_cast<nanos>(Clock::now().time_since_epoch());
    }

    detail::adaptive_limit_state* state_;
    std::size_t started_with_;
    timing timing_;
    nanos start_;
  };

  template <class T, class Executor>
  static boost::asio::awaitable<T, Executor> call(detail::own_frame_t,
                                                  detail::adaptive_limit_state* state,
                                                  boost::asio::awaitable<T, Executor> aw) {
    namespace asio = boost::asio;
    boost::system::error_code ec;
    std::size_t started_with = 0;
    auto timing = detail::adaptive_limit_state::timing::every;
    switch (state->try_enter(started_with, timing)) {
      case detail::adaptive_limit_state::entry::granted:
        break;
      case detail::adaptive_limit_state::entry::full:
        ec = error::limit_exceeded;
        break;
      case detail::adaptive_limit_state::entry::queue: {
        // The wait holds an owner (the limiter may go meanwhile); the frame
        // is counted in once it has a slot.
        auto owner = state->shared_from_this();
        const Executor ex = co_await asio::this_coro::executor;
        std::tie(ec) = co_await detail::async_wait_for_slot<Clock>(
            owner, ex, owner->options().max_wait,
            asio::as_tuple(asio::use_awaitable_t<Executor>{}));
        if (!ec) timing = owner->frame_in(started_with);
        break;
      }
    }
    if (ec) co_return detail::error_result<T>(ec);
    ticket t(state, started_with, timing);
    try {
      if constexpr (std::is_void_v<T>) {
        co_await std::move(aw);
        t.finish(call_result());
      } else {
        T value = co_await std::move(aw);
        t.finish(detail::make_value_result(value));
        co_return std::move(value);
      }
    } catch (const boost::system::system_error& e) {
      const boost::system::error_code code = e.code();
      t.finish(call_result(std::current_exception(), &code));
      throw;
    } catch (...) {
      t.finish(call_result(std::current_exception(), nullptr));
      throw;
    }
  }

  friend struct detail::guard_access;
  executor_type executor_;
  std::shared_ptr<detail::adaptive_limit_state> state_;
};

/// The steady_clock adaptive limit.
using adaptive_limit = basic_adaptive_limit<>;

}  // namespace levee
