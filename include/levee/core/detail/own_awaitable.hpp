// levee: a completion token for an asynchronous operation awaited inside a
// levee coroutine, as `asio::use_awaitable`, with the operation's own
// coroutine frame from levee's block cache.
#pragma once

#include <levee/core/detail/own_frame.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <type_traits>
#include <utility>

namespace levee::detail {

#if defined(LEVEE_OWN_FRAMES)
/// `co_await op(..., use_own_awaitable)` is `co_await op(..., asio::use_awaitable)`
/// with one difference: Asio initiates an operation awaited so from a
/// coroutine of its own (`async_result<use_awaitable_t>::initiate`), whose
/// frame comes from the thread's two cached blocks for coroutine frames,
/// or from the heap when the awaiting coroutines hold both. This token's
/// initiating coroutine is an `own_frame` one (core/detail/own_frame.hpp):
/// its frame comes from levee's block cache, and Asio's two blocks are left
/// to the caller's frames (bench/README.md, "The operations levee awaits,
/// in levee's frames"). The handler, the executor, the cancellation and the
/// result are use_awaitable's own (`awaitable_handler`). Asio's detail:
/// Boost 1.81 only, as `own_frame`; with any other Boost it is
/// `asio::use_awaitable`.
struct use_own_awaitable_t {
  constexpr use_own_awaitable_t() = default;
};
inline constexpr use_own_awaitable_t use_own_awaitable{};
#else
using use_own_awaitable_t = boost::asio::use_awaitable_t<>;
inline constexpr use_own_awaitable_t use_own_awaitable{};
#endif

}  // namespace levee::detail

#if defined(LEVEE_OWN_FRAMES)
namespace boost::asio {

template <typename R, typename... Args>
class async_result<levee::detail::use_own_awaitable_t, R(Args...)> {
 public:
  using handler_type = detail::awaitable_handler<any_io_executor, std::decay_t<Args>...>;
  using return_type = typename handler_type::awaitable_type;

  template <typename Initiation, typename... InitArgs>
  static return_type initiate(Initiation initiation, levee::detail::use_own_awaitable_t,
                              InitArgs... args) {
    return launch(levee::detail::own_frame, std::move(initiation), std::move(args)...);
  }

 private:
  // As use_awaitable's `do_init`: the handler takes the awaiting thread of
  // coroutines, and the operation is started with it.
  template <typename Initiation, typename... InitArgs>
  static handler_type* start(detail::awaitable_frame_base<any_io_executor>* frame,
                             Initiation& initiation, InitArgs&... args) {
    handler_type handler(frame->detach_thread());
    std::move(initiation)(std::move(handler), std::move(args)...);
    return nullptr;
  }

  // As use_awaitable's `initiate`, in a frame of levee's (the tag).
  template <typename Initiation, typename... InitArgs>
  static return_type launch(levee::detail::own_frame_t, Initiation initiation, InitArgs... args) {
    co_await [&](auto* frame) { return start(frame, initiation, args...); };
    for (;;) {
    }  // Never reached: the handler resumes the awaiting coroutine.
  }
};

}  // namespace boost::asio
#endif
