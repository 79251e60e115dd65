// levee: the breaker core's window (reading it, clearing it) and its
// reconfiguration (docs/reconfigure.md): what a reconfigured core keeps, and
// `reconfigure`. Compiled once in lib/.
#pragma once

#include <levee/breaker/detail/breaker_core.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <type_traits>
#include <vector>

namespace levee::detail {

// What a reconfigured core keeps (`ext_`): the options it replaced (the shell
// and callers may still read them: they live as long as the core), and the
// window's memory when a reconfiguration gave it a window that does not fit
// the room the shards were allocated with.
struct breaker_core::window_ext {
  std::vector<std::unique_ptr<const breaker_options>> retired;
  std::uint64_t reconfigurations = 0;
  std::unique_ptr<std::byte[], aligned_delete> memory;  // the moved window, if any
  std::size_t part_stride = 0;                          // its parts' distance
  std::size_t part_room = 0;    // what the shards' own room holds: after each header,
  std::size_t shared_room = 0;  // and after the last shard
  std::byte* shared = nullptr;  // the moved window's shared part
};

template <class Stamp>
window_totals breaker_core::totals(std::uint64_t generation, std::uint64_t epoch, Stamp stamp,
                                   limits* l) noexcept {
  for (;;) {
    // Shard 0's lock first: the window's parameters, memory, epoch and the
    // thresholds are read under it; each other shard's lock then shows
    // whether a reconfiguration replaced them meanwhile.
    shard& first = shard_at(0);
    first.lock.lock();
    const std::uint32_t seen = window_epoch_;
    if (epoch != any_epoch && seen != static_cast<std::uint32_t>(epoch)) {
      first.lock.unlock();
      return {};  // the window the caller recorded in is gone
    }
    if (l) {
      *l = {failure_numerator_, slow_numerator_, minimum_calls_, failure_exponent_, slow_exponent_};
    }
    bool replaced = false;
    const window_totals t = window_kinds::visit(kind(), [&]<class W>(std::type_identity<W>) {
      const W w = window_as<W>();  // a copy: it may change once shard 0 is unlocked
      window_totals sum = w.shared_totals(shared_part());
      for (std::size_t i = 0; i <= shard_mask_; ++i) {
        shard& s = shard_at(i);
        if (i != 0) {
          s.lock.lock();
          if (window_epoch_ != seen) {
            s.lock.unlock();
            replaced = true;
            return window_totals{};
          }
        }
        if (generation == 0 || s.generation == generation) {
          std::byte* part = part_of(s);
          const window_totals p = w.part_totals(part, stamp(w, part));
          sum.calls += p.calls;
          sum.failures += p.failures;
          sum.slow += p.slow;
        }
        s.lock.unlock();
      }
      return sum;
    });
    if (!replaced) return t;
    if (epoch != any_epoch) return {};
    // else: a reconfiguration came between two shards; read the new window.
  }
}

transition breaker_core::check_window(std::uint64_t generation, std::int64_t stamp,
                                      std::uint32_t epoch) noexcept {
  limits l{};
  const window_totals t = totals(
      generation, epoch, [stamp](const auto&, std::byte*) { return stamp; }, &l);
  if (t.calls == 0) return {};  // empty, or no longer the window (minimum_calls >= 1)
  transition_reason why{};
  if (over_threshold(t, l, why)) return trip(generation, why, t);
  if (t.calls >= l.minimum_calls) {
    validated_.store(validation_stamp(generation, stamp), std::memory_order_relaxed);
  }
  return {};
}

transition breaker_core::success_recorded(permit p, std::int64_t stamp,
                                          std::uint32_t epoch) noexcept {
  return recorded(p, false, false, stamp, epoch);
}

transition breaker_core::complete_other(permit p, bool failed, bool slow, nanos now,
                                        bool counted) noexcept {
  shard& own = my_shard();
  std::uint8_t seen = bits();
  for (;;) {
    shard& s = (seen & shared_only_bit) ? shard_at(0) : own;
    s.lock.lock();
    // Stable while any shard's lock is held (a reconfiguration takes them all).
    const std::uint8_t b = bits();
    if ((b ^ seen) & shared_only_bit) {  // the kind changed before the lock was taken
      s.lock.unlock();
      seen = b;
      continue;
    }
    if (!counted) {
      (failed ? s.failures : s.successes).bump_locked();
      if (slow) s.slow.bump_locked();
    }
    if (s.generation != p.generation()) {  // admitted before the window was reset
      s.lock.unlock();
      return {};
    }
    const std::uint32_t epoch = window_epoch_;
    std::byte* part = s.part();
    std::byte* shared = shard_memory_.get() + shard_count() * stride_;
    if (b & moved_bit) [[unlikely]] {
      part = part_of(s);
      shared = shared_part();
    }
    const auto k = static_cast<window_kind>(b & kind_mask);
    const std::int64_t stamp = window_kinds::visit(k, [&]<class W>(std::type_identity<W>) {
      return window_as<W>().record(part, shared, now, failed, slow);
    });
    s.lock.unlock();
    return recorded(p, failed, slow, stamp, epoch);
  }
}

void breaker_core::reset_windows(std::uint64_t generation) noexcept {
  // Under transition_lock_: the window's parameters cannot change meanwhile.
  window_kinds::visit(kind(), [&]<class W>(std::type_identity<W>) {
    const W& w = window_as<W>();
    for (std::size_t i = 0; i <= shard_mask_; ++i) {
      shard& s = shard_at(i);
      spin_guard g(s.lock);
      s.generation = generation;
      w.clear_part(part_of(s));
      // The shared part under shard 0's lock, with shard 0's generation: a
      // `shared_only` window is recorded under that lock against that
      // generation, so no older call records in it after this.
      if (i == 0) w.clear_shared(shared_part());
    }
  });
  consecutive_.store(0, std::memory_order_relaxed);
  validated_.store(0, std::memory_order_relaxed);
}

window_totals breaker_core::window(nanos now) noexcept {
  return totals(
      0, any_epoch, [now](const auto& w, std::byte* p) { return w.stamp_at(p, now); }, nullptr);
}

void breaker_core::test_preload(nanos now, std::uint32_t calls, std::uint32_t failures,
                                std::uint32_t slow) noexcept {
  shard& s = my_shard();
  spin_guard g(s.lock);
  window_kinds::visit(kind(), [&]<class W>(std::type_identity<W>) {
    if constexpr (requires(const W& w, std::byte* p) { w.preload(p, nanos{}, window_totals{}); }) {
      window_as<W>().preload(part_of(s), now, {calls, failures, slow});
    }
  });
}

breaker_core::~breaker_core() {  // shards are trivially destructible
  delete ext_;
  delete options_.load(std::memory_order_relaxed);
}

std::byte* breaker_core::part_of(shard& s) const noexcept {
  if (!(bits() & moved_bit)) [[likely]]
    return s.part();
  const auto i =
      static_cast<std::size_t>(reinterpret_cast<std::byte*>(&s) - shard_memory_.get()) / stride_;
  return ext_->memory.get() + i * ext_->part_stride;
}

std::byte* breaker_core::shared_part() const noexcept {
  if (bits() & moved_bit) return ext_->shared;
  return shard_memory_.get() + shard_count() * stride_;
}

// ---- reconfiguration (docs/reconfigure.md) ---------------------------------

void breaker_core::lock_shards() noexcept {
  for (std::size_t i = 0; i <= shard_mask_; ++i) shard_at(i).lock.lock();
}

void breaker_core::unlock_shards() noexcept {
  for (std::size_t i = 0; i <= shard_mask_; ++i) shard_at(i).lock.unlock();
}

namespace {
constexpr std::size_t line_bytes = 64;
bool same_window(const breaker_options& a, const breaker_options& b) noexcept {
  if (a.window_type != b.window_type) return false;
  if (a.window_type == window_kind::count) return a.window_calls == b.window_calls;
  return a.window == b.window && a.window_buckets == b.window_buckets;
}
}  // namespace

transition breaker_core::reconfigure(const breaker_options& o, nanos now) {
  // Reconfigurations are serialised by the caller (the shell's mutex): only
  // they replace `options_`, so the current options may be read here. Every
  // allocation comes first, so that a failed one changes nothing.
  const breaker_options& old = options();
  auto next = std::make_unique<const breaker_options>(o);
  std::unique_ptr<window_ext> fresh;
  if (!ext_) {
    fresh = std::make_unique<window_ext>();
    // The room the shards were allocated with: the window they hold now.
    window_kinds::visit(kind(), [&]<class W>(std::type_identity<W>) {
      fresh->part_room = stride_ - sizeof(shard);
      fresh->shared_room = window_as<W>().shared_bytes();
    });
  }
  window_ext& x = ext_ ? *ext_ : *fresh;
  x.retired.reserve(x.retired.size() + 1);  // the push_back under the locks cannot throw

  const bool new_window = !same_window(old, o);
  bool fits = true;
  std::unique_ptr<std::byte[], aligned_delete> memory;
  std::size_t part_stride = 0;
  std::size_t part_bytes = 0;
  std::size_t shared_bytes = 0;
  if (new_window) {
    window_kinds::visit(o.window_type, [&]<class W>(std::type_identity<W>) {
      const W w(o);
      part_bytes = w.part_bytes();
      shared_bytes = w.shared_bytes();
      fits = part_bytes <= x.part_room && shared_bytes <= x.shared_room;
      if (fits) return;
      // Each part on cache lines of its own, as the shards.
      part_stride = (part_bytes + line_bytes - 1) / line_bytes * line_bytes;
      const std::size_t bytes =
          shard_count() * part_stride + std::max<std::size_t>(shared_bytes, 8);
      memory.reset(static_cast<std::byte*>(::operator new[](bytes, std::align_val_t{line_bytes})));
      for (std::size_t i = 0; i <= shard_mask_; ++i) w.init_part(memory.get() + i * part_stride);
      w.init_shared(memory.get() + shard_count() * part_stride);
    });
  }

  std::unique_ptr<std::byte[], aligned_delete> old_memory;  // freed after the locks
  {
    spin_guard g(transition_lock_);
    lock_shards();
    if (fresh) ext_ = fresh.release();
    ext_->retired.emplace_back(options_.load(std::memory_order_relaxed));
    options_.store(next.release(), std::memory_order_release);
    const decimal_ratio failure = decimal_ratio::from_double(o.failure_rate_threshold);
    const decimal_ratio slow = decimal_ratio::from_double(o.slow_call_rate_threshold);
    failure_numerator_ = failure.numerator;
    failure_exponent_ = failure.exponent;
    slow_numerator_ = slow.numerator;
    slow_exponent_ = slow.exponent;
    minimum_calls_ = o.minimum_calls;
    slow_ns_.store(o.slow_call_duration.count(), std::memory_order_relaxed);
    probe_limit_.store(static_cast<std::uint16_t>(o.half_open_probes), std::memory_order_relaxed);
    if (consecutive_limit_.load(std::memory_order_relaxed) == 0)
      consecutive_.store(0, std::memory_order_relaxed);  // it did not count while off
    consecutive_limit_.store(o.consecutive_failures, std::memory_order_relaxed);
    if (o.jitter_seed != 0 && o.jitter_seed != old.jitter_seed) rng_ = splitmix64{o.jitter_seed};
    if (new_window) {
      window_kinds::visit(o.window_type, [&]<class W>(std::type_identity<W>) {
        const W& w = *new (window_) W(o);
        std::uint8_t b = bits_of<W>();
        old_memory = std::move(ext_->memory);
        if (fits) {  // in the shards' own room
          for (std::size_t i = 0; i <= shard_mask_; ++i) w.init_part(shard_at(i).part());
          w.init_shared(shard_memory_.get() + shard_count() * stride_);
          ext_->shared = nullptr;
        } else {
          b = static_cast<std::uint8_t>(b | moved_bit);
          ext_->memory = std::move(memory);
          ext_->part_stride = part_stride;
          ext_->shared = ext_->memory.get() + shard_count() * part_stride;
        }
        window_bits_.store(b, std::memory_order_relaxed);
      });
    }
    // Every reconfiguration is a new epoch: a check that read the old
    // thresholds (or the old window) decides nothing; this one checks below.
    ++window_epoch_;
    validated_.store(0, std::memory_order_relaxed);
    ++ext_->reconfigurations;
    unlock_shards();
  }

  // The window it kept, against the new thresholds, at once (CLOSED only:
  // `trip` checks).
  const std::uint64_t w = state_.load(std::memory_order_acquire);
  if (state_of(w) != circuit_state::closed) return {};
  limits l{};
  const window_totals t = totals(
      generation_of(w), any_epoch,
      [now](const auto& win, std::byte* p) { return win.stamp_at(p, now); }, &l);
  transition_reason why{};
  if (t.calls != 0 && over_threshold(t, l, why)) return trip(generation_of(w), why, t);
  return {};
}

std::uint64_t breaker_core::reconfigurations() const noexcept {
  spin_guard g(const_cast<spinlock&>(transition_lock_));
  return ext_ ? ext_->reconfigurations : 0;
}

nanos breaker_core::current_open_duration() noexcept {
  spin_guard g(transition_lock_);
  return next_open_duration();
}

}  // namespace levee::detail
