// levee: the completion-token forms' co_spawn, which carries the caller's
// deadline (with_deadline's, timeout/deadline.hpp) to the coroutine it runs.
#pragma once

#include <levee/core/detail/result_shape.hpp>
#include <levee/core/detail/run_on.hpp>
#include <levee/timeout/deadline.hpp>
#include <levee/timeout/detail/race.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>

#include <exception>
#include <memory>
#include <type_traits>
#include <utility>

namespace levee::detail {

/// The deadline the completion handler's associated executor carries (a
/// handler made inside a `with_deadline`), else `ex`'s.
template <class Handler, class Executor>
std::optional<deadline_mark> caller_deadline(const Handler& handler, const Executor& ex) {
  const auto hex = asio::get_associated_executor(handler, ex);
  if constexpr (std::is_convertible_v<decltype(hex), asio::any_io_executor>) {
    if constexpr (std::is_same_v<std::decay_t<decltype(hex)>, asio::any_io_executor>) {
      return find_deadline(hex);
    } else {
      return find_deadline(asio::any_io_executor(hex));
    }
  }
  return std::nullopt;
}

/// `co_spawn(ex, aw, token)`, but when the completion handler's associated
/// executor carries a deadline (the token form awaited inside a
/// `with_deadline`), `aw` runs on a strand of `ex` that carries it, as
/// with_deadline's own operation does: levee's HTTP client inside it then
/// sends the deadline and is capped by it. Only an `aw` whose executor type
/// is `any_io_executor` can carry one; others run on `ex`, as before.
/// Without a deadline, exactly `co_spawn(ex, aw, token)`. With one, the
/// caller's cancellation reaches `aw` through a shared state (`run_on_op`),
/// not co_spawn's raw pointer.
template <class Executor, class T, class AwaitableExecutor, class CompletionToken>
auto spawn_carrying_deadline(const Executor& ex, asio::awaitable<T, AwaitableExecutor> aw,
                             CompletionToken&& token) {
  return asio::async_initiate<CompletionToken, spawn_signature_t<T>>(
      [ex](auto handler, asio::awaitable<T, AwaitableExecutor> a) {
        if constexpr (std::is_same_v<AwaitableExecutor, asio::any_io_executor>) {
          if (const auto mark = caller_deadline(handler, ex)) {
            const asio::any_io_executor carrying =
                carry_mark(serial_executor(asio::any_io_executor(ex)), *mark);
            // Not co_spawn: the caller is not on the new strand, and
            // co_spawn's forwarding of its cancellation (the deadline's) can
            // run after the caller freed its slot (Asio issue 1332;
            // core/detail/run_on.hpp).
            using op_type = run_on_op<T, std::decay_t<decltype(handler)>, asio::any_io_executor>;
            std::make_shared<op_type>(std::move(handler), asio::any_io_executor(ex), carrying)
                ->start(std::move(a));
            return;
          }
        }
        asio::co_spawn(ex, std::move(a), std::move(handler));
      },
      token, std::move(aw));
}

}  // namespace levee::detail
