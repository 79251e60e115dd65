// levee: the breaker's window kinds, behind one seam (docs/design.md, "The
// windows"), and the one place that dispatches on `window_kind`.
//
// A window kind is a class in a file of its own (time_window.hpp,
// count_window.hpp) with:
//
//   static constexpr window_kind kind;       its enumerator (core/vocabulary.hpp)
//   static constexpr const char* name;       "time": for the options' message
//   static constexpr bool needs_time;        `record` reads `now` (the shell
//                                            reads the clock for it)
//   static constexpr bool fleet_shareable;   the fleet link can add it up
//                                            across instances
//   static constexpr bool shared_only;       it keeps nothing per shard
//                                            (part_bytes() == 0): the core
//                                            records it under shard 0's lock
//                                            instead of the caller's own
//   static void validate(const breaker_options&);   its own options' rules
//   explicit W(const breaker_options&);      its parameters: trivially copyable
//                                            and destructible, at most 12 bytes
//                                            (kept in the core's first line)
//   part_bytes() / shared_bytes()            the memory it needs after each
//                                            shard's header / once after the
//                                            shards (8-byte aligned, zeroed)
//   init_part(part) / init_shared(shared)    makes that memory an empty window
//   record(part, shared, now, failed, slow)  one finished call of the current
//                                            generation, under its shard's
//                                            lock (shard 0's: `shared_only`);
//                                            returns a stamp: between two
//                                            calls with the same stamp (in one
//                                            generation) a call that is neither
//                                            failed nor slow cannot raise a rate
//   stamp_at(part, now)                      the stamp of `now`
//   part_totals(part, stamp)                 one shard's part as of `stamp`,
//                                            under its lock
//   shared_totals(shared)                    the shared part's
//   clear_part(part) / clear_shared(shared)  empties it (a new window)
//   preload(part, now, counts)               optional: a test hook
//
// The window is the sum of every shard's part_totals and the shared_totals.
// The shared part is touched only under shard 0's lock (init, record of a
// `shared_only` kind, shared_totals, clear_shared). A CLOSED call's success
// (slow-call detection off) is recorded inline in every kind (`any_of`:
// `breaker_core::complete_success_and_leave`); any other call, in the first
// kind listed inline and in every other kind through `visit`, compiled once.
#pragma once

#include <levee/breaker/detail/count_window.hpp>
#include <levee/breaker/detail/time_window.hpp>
#include <levee/breaker/options.hpp>
#include <levee/core/vocabulary.hpp>

#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>

namespace levee::detail {

template <class First, class... Rest>
struct window_list {
  /// The kind recorded inline on the hot path: the first listed.
  using inline_kind = First;

  static constexpr bool known(window_kind k) noexcept {
    return k == First::kind || ((k == Rest::kind) || ...);
  }

  /// Calls `f(std::type_identity<W>{})` for the kind `W` whose enumerator is
  /// `k` (`k` must be `known`: options are validated first).
  template <class F>
  static decltype(auto) visit(window_kind k, F&& f) {
    return visit_from<First, Rest...>(k, std::forward<F>(f));
  }

  /// Calls `f(std::type_identity<W>{})` for each kind `W` in the order
  /// listed until one returns true; inline (the hot path's dispatch).
  template <class F>
  [[gnu::always_inline]] static bool any_of(F&& f) {
    return f(std::type_identity<First>{}) || (f(std::type_identity<Rest>{}) || ...);
  }

  /// "must be window_kind::time or window_kind::count": the options' rule.
  static std::string rule() {
    std::string r = "must be window_kind::";
    r += First::name;
    std::size_t left = sizeof...(Rest);
    ((r += --left == 0 ? " or window_kind::" : ", window_kind::", r += Rest::name), ...);
    return r;
  }

 private:
  template <class W, class... More, class F>
  static decltype(auto) visit_from(window_kind k, F&& f) {
    if constexpr (sizeof...(More) == 0) {
      return std::forward<F>(f)(std::type_identity<W>{});
    } else {
      if (k == W::kind) return std::forward<F>(f)(std::type_identity<W>{});
      return visit_from<More...>(k, std::forward<F>(f));
    }
  }
};

/// Every window kind. A new kind: its file (the members above), its
/// enumerator in `window_kind`, and one entry here.
using window_kinds = window_list<time_window, count_window>;

}  // namespace levee::detail
