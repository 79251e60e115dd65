/// \file
/// A bulkhead, the concurrency limit of levee's composition order
/// (README, "Composing levee").
#pragma once

#include <levee/core/detail/own_frame.hpp>
#include <levee/limit/bulkhead_options.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/execution_context.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <type_traits>

namespace levee {

namespace detail {
class bulkhead_state;  // limit/detail/bulkhead.hpp
}  // namespace detail

/// A bulkhead: at most `max_concurrent` guarded calls run at once; up to
/// `max_queue` more wait, first come first served, each for at most
/// `max_wait` (and never beyond its caller's own cancellation); any other is
/// rejected with `error::bulkhead_full` without being started.
///
/// Thread safety: shared freely between threads of a multi-threaded
/// `io_context`, without strands.
///
/// Lifetime: as Asio allows for its I/O objects, the bulkhead may be destroyed
/// while calls hold slots or wait in its queue (with the README's declaration
/// order, `io_context` first, the bulkhead is destroyed first). Calls holding
/// a slot run on and give it back to a state they share; waiting calls
/// complete with `operation_aborted` (posted: if the `io_context` is destroyed
/// rather than run, their coroutines are destroyed with it, not leaked). A
/// call started on a destroyed bulkhead's awaitable ends the same way.
///
/// `Clock` times `max_wait`. `bulkhead` is the steady_clock bulkhead.
template <class Clock = std::chrono::steady_clock>
class basic_bulkhead {
 public:
  /// The type of `get_executor()`.
  using executor_type = boost::asio::any_io_executor;

  /// A bulkhead on `ex`.
  /// \param ex Its executor (anything `any_io_executor` accepts): that of
  /// `async_acquire`'s timer and, by default, of its handler.
  /// \param options Its limits; validated (`validate`).
  /// \throws std::invalid_argument naming the member when `options` is invalid.
  template <class Executor>
  requires std::is_convertible_v<const Executor&, boost::asio::any_io_executor>
  explicit basic_bulkhead(const Executor& ex, bulkhead_options options = {});

  /// A bulkhead on `ctx.get_executor()`.
  /// \param ctx An execution context, such as an `io_context`.
  /// \param options Its limits; validated (`validate`).
  /// \throws std::invalid_argument naming the member when `options` is invalid.
  template <class ExecutionContext>
  requires std::is_convertible_v<ExecutionContext&, boost::asio::execution_context&>
  explicit basic_bulkhead(ExecutionContext& ctx, bulkhead_options options = {})
      : basic_bulkhead(ctx.get_executor(), options) {}

  /// Movable (the calls and waiters go with the state), not copyable; the
  /// moved-from object may only be destroyed or assigned to.
  basic_bulkhead(basic_bulkhead&&) noexcept = default;
  /// Closes this bulkhead's state as the destructor does (its waiting calls
  /// end with `operation_aborted`), then takes `other`'s.
  /// \param other The bulkhead to take; it may then only be destroyed or
  /// assigned to.
  /// \return `*this`.
  basic_bulkhead& operator=(basic_bulkhead&& other);
  /// Completes every waiting call with `operation_aborted` (see Lifetime).
  ~basic_bulkhead();

  /// The bulkhead's executor.
  /// \return the executor given at construction.
  executor_type get_executor() const noexcept { return executor_; }
  /// The options in force: the constructor's, or the last `reconfigure`'s.
  /// \return them, as validated; the reference stays valid as long as the
  /// bulkhead's state (a reconfiguration keeps the options it replaced).
  const bulkhead_options& options() const noexcept;

  /// Applies new limits to the running bulkhead (docs/reconfigure.md),
  /// thread-safe against calls in flight and waiting on any thread. A lower
  /// `max_concurrent` cancels no call: the calls running finish, and no
  /// waiter nor new call is admitted until fewer than the new limit run. A
  /// higher one admits waiters at once, first come first served. A lower
  /// `max_queue` cancels no waiter: new calls are refused while the queue is
  /// that long or longer. A waiter keeps the `max_wait` it started waiting
  /// with; new waiters get the new one. `reconfigurations()` goes up.
  /// \param options The new limits; validated as by the constructor.
  /// \throws std::invalid_argument naming the member when `options` is
  /// invalid; nothing changes then.
  void reconfigure(const bulkhead_options& options);

  /// Times `reconfigure` applied new limits.
  /// \return that count, since construction.
  std::uint64_t reconfigurations() const noexcept;
  /// The calls running now.
  /// \return the slots taken.
  std::size_t in_flight() const noexcept;
  /// The calls waiting for a slot now.
  /// \return the queue's length.
  std::size_t queued() const noexcept;

  /// Guards `aw`: `co_await bulkhead(call())`.
  ///
  /// Signature: `asio::awaitable<T, Executor> operator()(asio::awaitable<T,
  /// Executor> aw)`; the result is `aw`'s, unchanged, when `aw` runs. A
  /// rejection (`error::bulkhead_full`) or a cancelled wait
  /// (`operation_aborted`) is reported in the shape of `T`: a thrown
  /// `boost::system::system_error`, or `{ec, U{}...}` when `T` is
  /// `std::tuple<error_code, U...>` (Asio's rule: `as_tuple` makes the
  /// shape, see the README).
  ///
  /// Cancellation: the awaiting coroutine's cancellation (any type) ends a
  /// wait in the queue; once a slot is held it reaches `aw` unchanged.
  ///
  /// Executor: `aw` runs on the awaiting coroutine's executor.
  ///
  /// Lifetime: `aw` is moved in; the bulkhead may be destroyed before the
  /// returned awaitable ends (see Lifetime above).
  ///
  /// Thread safety: any thread, concurrently with other calls.
  ///
  /// \param aw The call to guard.
  /// \return an awaitable with the same result as `aw`.
  template <class T, class Executor>
  boost::asio::awaitable<T, Executor> operator()(boost::asio::awaitable<T, Executor> aw);

  /// Waits for a slot, for a caller that holds it by hand.
  ///
  /// Completion signature: `void(error_code)`: success (the caller now holds
  /// a slot and must call `release()` exactly once), `bulkhead_full` (the
  /// queue is full, or `max_wait` ran out) or `operation_aborted` (the wait
  /// was cancelled, or the bulkhead destroyed). Never completes inside the
  /// call: the handler is posted.
  ///
  /// Cancellation: the handler's cancellation slot, all types, while waiting
  /// (a granted slot is not taken back).
  ///
  /// Executor: the handler runs on its associated executor (default: the
  /// bulkhead's); the `max_wait` timer runs on the bulkhead's.
  ///
  /// Lifetime: nothing is borrowed; the bulkhead may be destroyed while the
  /// operation waits (it then completes with `operation_aborted`). A slot
  /// granted to a handler that is destroyed without being run (its
  /// io_context destroyed first) is given back.
  ///
  /// Thread safety: any thread, concurrently with other calls.
  ///
  /// \param token The completion token.
  /// \return what `token` makes of the operation (as `asio::async_initiate`).
  template <BOOST_ASIO_COMPLETION_TOKEN_FOR(void(boost::system::error_code))
                CompletionToken = boost::asio::default_completion_token_t<executor_type>>
  auto async_acquire(
      CompletionToken&& token = boost::asio::default_completion_token_t<executor_type>());

  /// Gives back a slot taken with `async_acquire`. Any thread.
  void release() noexcept;

 private:
  template <class T, class Executor>
  static boost::asio::awaitable<T, Executor> call(detail::own_frame_t,
                                                  std::shared_ptr<detail::bulkhead_state> state,
                                                  std::chrono::nanoseconds max_wait,
                                                  boost::asio::awaitable<T, Executor> aw);

  executor_type executor_;
  std::shared_ptr<detail::bulkhead_state> state_;
};

/// The steady_clock bulkhead.
using bulkhead = basic_bulkhead<>;

}  // namespace levee

#include <levee/limit/impl/bulkhead.hpp>
