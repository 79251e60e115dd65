/// \file
/// Hedged calls to an upstream: a hedge goes to another endpoint
/// (docs/hedging.md, "Upstreams").
#pragma once

#include <levee/core/detail/block_cache.hpp>
#include <levee/hedge/hedge.hpp>
#include <levee/upstream/upstream.hpp>

#include <boost/asio/awaitable.hpp>

#include <memory>
#include <type_traits>

namespace levee {

/// One hedged call to `up`: `co_await hedged_call(h, up, [&](const
/// upstream_endpoint& e) { return get(e.address); })`. Each attempt is a
/// call of `up` (its breakers, ejection, retries elsewhere), and the
/// attempts share the endpoints they picked, so a hedge goes to an endpoint
/// the others are not on, while one is left (as the upstream's retries do).
///
/// \param h The hedge; borrowed.
/// \param up The upstream; borrowed.
/// \param fn As for `basic_upstream::operator()`; copied for each attempt.
/// \return an awaitable of `fn`'s result type.
template <class HClock, class UClock, class WaitTraits, class Fn,
          class Awaitable = std::invoke_result_t<Fn&, const upstream_endpoint&>>
Awaitable hedged_call(basic_hedge<HClock>& h, basic_upstream<UClock, WaitTraits>& up, Fn fn) {
  // The record is shared with each attempt, which holds it through its copy
  // of `fn`: an attempt can outlive this frame (a wait whose initiation threw
  // after the first attempt was launched: Asio destroys the frame, and the
  // attempt runs on). The factory itself is called only while this frame
  // waits.
  auto tried = std::allocate_shared<upstream_tried>(detail::cached_allocator<upstream_tried>());
  // No temporary inside the co_await expression: GCC 12 has destroyed such
  // temporaries twice (the factory holds a reference count).
  auto call = h([&up, &fn, tried] {
    return up([f = fn, tried](const upstream_endpoint& e) mutable { return f(e); }, *tried);
  });
  co_return co_await std::move(call);
}

}  // namespace levee
