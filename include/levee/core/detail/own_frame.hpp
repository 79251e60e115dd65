// levee: coroutine frames of levee's own layers from levee's block cache,
// beside Asio's recycling allocator rather than in it.
#pragma once

#include <levee/core/detail/block_cache.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/version.hpp>

#include <coroutine>
#include <cstddef>
#include <utility>

namespace levee::detail {

/// The first parameter of a levee coroutine whose frame comes from
/// `block_cache` (after the object, for a non-static member function).
///
/// Why: Asio's recycling allocator keeps two blocks per thread for coroutine
/// frames. A call through two layers has three frames alive at once (the
/// outer layer's, the inner one's, the caller's call), so one of them came
/// from the heap on every call: about 140 instructions and 10 to 14 ns a
/// layer (bench/README.md, "Nested layers and Asio's frame cache"). With
/// levee's frames in levee's own cache (core/detail/block_cache.hpp), Asio's two
/// are left to the caller's frames.
///
/// How: a `std::coroutine_traits` specialisation on this tag selects
/// `own_frame_promise<T, Executor>`, which is Asio's promise type
/// (`asio::detail::awaitable_frame`) with its own `operator new` and
/// `operator delete` and nothing else: the same size, the same layout, the
/// same awaitable. That type is Asio's detail, so this holds for the Asio
/// it was written and tested against (Boost 1.81); with any other Boost the
/// tag changes nothing and the frames are Asio's.
struct own_frame_t {
  explicit own_frame_t() = default;
};
inline constexpr own_frame_t own_frame{};

#if BOOST_VERSION == 108100
#define LEVEE_OWN_FRAMES 1

template <class T, class Executor>
class own_frame_promise : public boost::asio::detail::awaitable_frame<T, Executor> {
  using base = boost::asio::detail::awaitable_frame<T, Executor>;
  static_assert(alignof(base) <= block_cache::granule, "over-aligned for the block cache");

 public:
  static void* operator new(std::size_t n) { return block_cache::allocate(n); }
  static void operator delete(void* p, std::size_t n) noexcept { block_cache::deallocate(p, n); }

  using base::await_transform;  // this_coro::*, async operations, co_spawn's own

  // Awaiting another awaitable: Asio's `awaitable::await_suspend` takes a
  // handle to `awaitable_frame<U, Executor>` and cannot deduce U from a
  // handle to this type, so the handle is given as one to the base (the
  // same frame: the promise is the base at the same address).
  template <class U>
  struct forward {
    boost::asio::awaitable<U, Executor> a;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<own_frame_promise> h) {
      a.await_suspend(std::coroutine_handle<base>::from_promise(h.promise()));
    }
    U await_resume() { return a.await_resume(); }
  };
  template <class U>
  auto await_transform(boost::asio::awaitable<U, Executor> a) const {
    return forward<U>{base::await_transform(std::move(a))};  // Asio's cancellation check kept
  }
};

static_assert(sizeof(own_frame_promise<int, boost::asio::any_io_executor>) ==
              sizeof(boost::asio::detail::awaitable_frame<int, boost::asio::any_io_executor>));
static_assert(sizeof(own_frame_promise<void, boost::asio::any_io_executor>) ==
              sizeof(boost::asio::detail::awaitable_frame<void, boost::asio::any_io_executor>));
// The same alignment: a handle made from the promise finds the same frame.
static_assert(alignof(own_frame_promise<int, boost::asio::any_io_executor>) ==
              alignof(boost::asio::detail::awaitable_frame<int, boost::asio::any_io_executor>));
#endif

}  // namespace levee::detail

#if defined(LEVEE_OWN_FRAMES)
namespace std {
// A free function or a static member function: the tag first.
template <class T, class Executor, class... Args>
struct coroutine_traits<boost::asio::awaitable<T, Executor>, levee::detail::own_frame_t, Args...> {
  using promise_type = levee::detail::own_frame_promise<T, Executor>;
};
// A non-static member function: the object, then the tag.
template <class T, class Executor, class Self, class... Args>
struct coroutine_traits<boost::asio::awaitable<T, Executor>, Self&, levee::detail::own_frame_t,
                        Args...> {
  using promise_type = levee::detail::own_frame_promise<T, Executor>;
};
}  // namespace std
#endif
