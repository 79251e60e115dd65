/// \file
/// The `listen` and `unlisten` members of the layers whose events go through
/// one shared set of listeners (the throttle, the rate limiter, the hedge).
#pragma once

#include <levee/core/detail/event_hub.hpp>

#include <boost/asio/any_io_executor.hpp>

#include <cstdint>
#include <functional>
#include <utility>

namespace levee {

/// The listeners of a layer, a base of the layer (`basic_throttle`,
/// `basic_rate_limiter`, `basic_hedge`). The rules (docs/observability.md,
/// "Events"): a listener runs on an executor, by default the layer's
/// (`get_executor()`), as a posted copy of each event: never inside the layer
/// nor under one of its locks, and in the order the layer emitted them when
/// that executor runs handlers in order. While nobody listens an event costs
/// the call path one relaxed load, where the layer would tell it; a listener
/// costs a post per event it wants. Thread-safe: every member from any thread.
/// \tparam Layer The layer: its `get_executor()`, and its private
/// `listeners()`, the `detail::event_hub` it emits to.
/// \tparam Event The layer's event (`throttle_event`, ...), whose `kind` is one bit.
template <class Layer, class Event>
class listenable {
 public:
  /// Adds a listener for the events in `mask` (bits of the event's kind; the
  /// layer's `all_..._events` for all), run on the layer's executor.
  /// \param mask The kinds wanted.
  /// \param fn The listener.
  /// \return an id for `unlisten`.
  std::uint64_t listen(std::uint32_t mask, std::function<void(const Event&)> fn) {
    return hub().listen(mask, std::move(fn), layer().get_executor());
  }
  /// As `listen(mask, fn)`, the listener run on `ex`.
  /// \param mask The kinds wanted.
  /// \param fn The listener.
  /// \param ex Where it runs.
  /// \return an id for `unlisten`.
  std::uint64_t listen(std::uint32_t mask, std::function<void(const Event&)> fn,
                       boost::asio::any_io_executor ex) {
    return hub().listen(mask, std::move(fn), std::move(ex));
  }
  /// Removes a listener: no event is posted to it after this returns (events
  /// already posted are still delivered).
  /// \param id What `listen` returned; an unknown id does nothing.
  void unlisten(std::uint64_t id) { hub().unlisten(id); }

 private:
  friend Layer;
  listenable() = default;
  // Copied and moved only as the layer's base: no slicing copy of the base.
  listenable(const listenable&) = default;
  listenable(listenable&&) noexcept = default;
  listenable& operator=(const listenable&) = default;
  listenable& operator=(listenable&&) noexcept = default;
  const Layer& layer() const noexcept { return static_cast<const Layer&>(*this); }
  detail::event_hub<Event>& hub() const noexcept { return layer().listeners(); }
};

}  // namespace levee
