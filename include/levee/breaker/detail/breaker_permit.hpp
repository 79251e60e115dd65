// levee: what the breaker's core hands out and returns: a `permit` (the
// right to run one call) and a `transition` (a state change for the shell to
// act on). Both trivially copyable, passed in registers.
#pragma once

#include <levee/core/vocabulary.hpp>

#include <chrono>
#include <cstdint>
#include <type_traits>

namespace levee::detail {

using nanos = std::chrono::nanoseconds;

/// The right to run one call, handed out by `breaker_core::try_acquire`.
/// Trivially copyable, one word: | generation | first probe (1) | kind (2) |.
/// An empty permit is a rejection.
class permit {
 public:
  /// `untracked`: admitted while DISABLED, counted by outcome but kept out of
  /// the window.
  enum kind_type : std::uint64_t { none = 0, closed_call = 1, probe = 2, untracked = 3 };

  permit() noexcept = default;
  permit(std::uint64_t generation, kind_type kind, bool first_probe = false) noexcept
      : bits_(generation << 3 | std::uint64_t{first_probe} << 2 | kind) {}

  explicit operator bool() const noexcept { return bits_ != 0; }
  bool is_probe() const noexcept { return (bits_ & 3) == probe; }
  /// Admitted in CLOSED (or METRICS_ONLY): neither a probe nor untracked.
  bool is_closed_call() const noexcept { return (bits_ & 3) == closed_call; }
  /// A probe or an untracked call: one test for both on the hot path.
  bool is_special() const noexcept { return (bits_ & 2) != 0; }
  /// The first probe of its HALF_OPEN round (the core admitted no probe in
  /// that state before it): the shell arms the half-open timer
  /// (`max_half_open_duration`) for it, and for no other permit.
  bool first_probe() const noexcept { return (bits_ & 4) != 0; }
  /// The generation of the state the call was admitted in.
  std::uint64_t generation() const noexcept { return bits_ >> 3; }

 private:
  std::uint64_t bits_ = 0;
};
static_assert(sizeof(permit) == 8 && std::is_trivially_copyable_v<permit>);

/// A state change the shell must act on: when `to` is OPEN, arm the timer for
/// `open_for` and call `open_elapsed(generation)` when it fires.
/// Default-constructed (`{}`), it means "nothing happened".
struct transition {
  constexpr transition() noexcept
      : from(circuit_state::closed),
        to(circuit_state::closed),
        reason(transition_reason::failure_rate),
        generation(0),
        open_for(0) {}
  constexpr transition(circuit_state f, circuit_state t, transition_reason r, std::uint64_t g,
                       nanos open = nanos::zero()) noexcept
      : from(f), to(t), reason(r), generation(g & 0xffff'ffff'ffffu), open_for(open) {}

  circuit_state from : 4;
  circuit_state to : 4;
  transition_reason reason : 8;
  std::uint64_t generation : 48;  ///< of the new state; 0: nothing happened
  nanos open_for;                 ///< when `to == open`

  explicit operator bool() const noexcept { return generation != 0; }
};
// Sixteen trivially copyable bytes come back in two registers: "nothing
// happened", the common answer, costs no memory traffic.
static_assert(sizeof(transition) == 16);

}  // namespace levee::detail
