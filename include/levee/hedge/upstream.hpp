/// \file
/// Hedged calls to an upstream: a hedge goes to another endpoint
/// (docs/hedging.md, "Upstreams").
#pragma once

#include <levee/hedge/hedge.hpp>
#include <levee/upstream/upstream.hpp>

#include <boost/asio/awaitable.hpp>

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
  upstream_tried tried;
  co_return co_await h([&] { return up(fn, tried); });
}

}  // namespace levee
