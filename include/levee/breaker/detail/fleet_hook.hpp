// levee: the fleet link's hook into a breaker (levee::fleet_link, docs/fleet.md).
//
// The one way from outside the breaker to its shared state, and all the link
// may do with it: read its options, state and counters, listen to its
// transitions, gate OPEN -> HALF_OPEN, and move it for the fleet
// (`fleet_open`, `fleet_close`, `fleet_half_open`). The public breaker has no
// member that returns its state: `basic_fleet_hook` reaches it through
// `fleet_access`, a friend of `basic_circuit_breaker`, and the shell's fleet
// members are private, with the hook as their friend.
#pragma once

#include <levee/breaker/detail/breaker_shell.hpp>
#include <levee/breaker/observe.hpp>
#include <levee/breaker/options.hpp>
#include <levee/core/detail/clock_traits.hpp>
#include <levee/core/vocabulary.hpp>

#include <boost/asio/any_io_executor.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <type_traits>
#include <utility>

namespace levee::detail {

/// A friend of `basic_circuit_breaker`: hands its shared state to the fleet
/// hook, and to nothing else.
struct fleet_access {
  template <class Breaker>
  static const auto& shared_state(const Breaker& b) noexcept {
    return b.impl_;
  }
};

/// The fleet link's hold on one breaker's shared state (`Shell`: its
/// `breaker_impl`). It shares the state as the breaker's calls do, so it may
/// outlive the breaker object; the link keeps it as a `weak` hold. A handle,
/// as a `shared_ptr` is: a const hook still acts on its breaker. Thread
/// safety: as the breaker's own members.
template <class Shell>
class basic_fleet_hook {
 public:
  basic_fleet_hook() noexcept = default;
  /// The hook of `breaker`, a `basic_circuit_breaker` whose shell is `Shell`.
  template <class Breaker>
  explicit basic_fleet_hook(const Breaker& breaker) noexcept
      : state_(fleet_access::shared_state(breaker)) {}

  explicit operator bool() const noexcept { return state_ != nullptr; }
  /// The same breaker.
  friend bool operator==(const basic_fleet_hook& a, const basic_fleet_hook& b) noexcept {
    return a.state_ == b.state_;
  }

  /// A hold that does not keep the breaker's state alive.
  class weak {
   public:
    weak() noexcept = default;
    weak(const basic_fleet_hook& h) noexcept : state_(h.state_) {}  // NOLINT: as weak_ptr
    /// The hook, or an empty one once the breaker's state is gone.
    basic_fleet_hook lock() const noexcept { return basic_fleet_hook(state_.lock()); }
    bool expired() const noexcept { return state_.expired(); }

   private:
    std::weak_ptr<Shell> state_;
  };

  // ---- what the link reads --------------------------------------------------
  const breaker_options& options() const noexcept { return state_->options(); }
  circuit_state state() const noexcept { return state_->core().state(); }
  std::uint64_t generation() const noexcept { return state_->core().generation(); }
  std::size_t probes_in_flight() const noexcept { return state_->core().probes_in_flight(); }
  breaker_counters counters() const noexcept { return state_->core().counters(); }

  // ---- the breaker's transitions, as events ---------------------------------
  std::uint64_t listen(event_mask mask, event_listener fn, boost::asio::any_io_executor ex) const {
    return state_->telemetry().listen(mask, std::move(fn), std::move(ex));
  }
  void unlisten(std::uint64_t id) const { state_->telemetry().unlisten(id); }

  // ---- what the link decides ------------------------------------------------
  /// While the gate is on, the open timer's expiry does not turn the breaker
  /// HALF_OPEN: it is remembered (`open_expired`) and the link decides
  /// (`half_open`). Turning the gate off applies a remembered expiry at once:
  /// a breaker whose link is gone is a local breaker again.
  void gate(bool on) const noexcept { state_->fleet_gate(on); }
  /// OPEN, and its timer fired while gated.
  bool open_expired() const noexcept { return state_->fleet_open_expired(); }
  /// OPEN `generation` -> HALF_OPEN now (reason `open_elapsed`), as if its
  /// timer fired; nothing in any other state.
  void half_open(std::uint64_t generation) const noexcept { state_->fleet_half_open(generation); }
  /// CLOSED -> OPEN (reason `fleet`) for `open_for` (zero: the breaker's own
  /// duration), following `origin`'s record (null: the fleet's window);
  /// returns the duration, zero when it was not CLOSED.
  std::chrono::nanoseconds open(std::chrono::nanoseconds open_for,
                                const fleet_origin* origin = nullptr) const noexcept {
    return state_->fleet_open(open_for, origin);
  }
  /// OPEN or HALF_OPEN -> CLOSED (reason `fleet`), following `origin`'s
  /// record; nothing in any other state.
  void close(const fleet_origin* origin = nullptr) const noexcept { state_->fleet_close(origin); }

 private:
  explicit basic_fleet_hook(std::shared_ptr<Shell> s) noexcept : state_(std::move(s)) {}
  std::shared_ptr<Shell> state_;
};

/// The hook of a `basic_circuit_breaker` of any clock (tests use
/// `manual_clock` breakers).
template <class Breaker>
auto fleet_hook_of(const Breaker& breaker) noexcept {
  using shell =
      typename std::remove_cvref_t<decltype(fleet_access::shared_state(breaker))>::element_type;
  return basic_fleet_hook<shell>(breaker);
}

/// The steady_clock breaker's hook: what `levee::fleet_link` holds.
using fleet_hook = basic_fleet_hook<
    breaker_impl<std::chrono::steady_clock, wait_traits_of_t<std::chrono::steady_clock>>>;

}  // namespace levee::detail
