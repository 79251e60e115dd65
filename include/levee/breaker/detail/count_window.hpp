// levee: the breaker's count window (`window_kind::count`): the outcomes of
// the last `window_calls` calls, as two bit rings (failed, slow) and their
// running sums, under a lock of its own. Plain loads and stores only.
#pragma once

#include <levee/core/detail/spinlock.hpp>
#include <levee/core/vocabulary.hpp>

#include <algorithm>
#include <cstdint>
#include <memory>

namespace levee::detail {

class count_window {
 public:
  explicit count_window(std::uint32_t size)
      : size_(size), bits_(std::make_unique<std::uint64_t[]>(2 * words())) {}  // zeroed

  /// Records a call admitted in `generation` and returns the window's totals
  /// after it in `out`; false (nothing recorded) if the window was reset since.
  bool record(std::uint64_t generation, bool failed, bool slow, window_totals& out) noexcept {
    spin_guard g(lock_);
    if (generation_ != generation) return false;
    std::uint64_t& fail_word = bits_[next_ / 64];
    std::uint64_t& slow_word = bits_[words() + next_ / 64];
    const std::uint64_t bit = std::uint64_t{1} << (next_ % 64);
    if (filled_ == size_) {  // the slot holds the oldest call: evict it
      if (fail_word & bit) --failures_;
      if (slow_word & bit) --slow_;
    } else {
      ++filled_;
    }
    fail_word = failed ? (fail_word | bit) : (fail_word & ~bit);
    slow_word = slow ? (slow_word | bit) : (slow_word & ~bit);
    failures_ += failed;
    slow_ += slow;
    next_ = next_ + 1 == size_ ? 0 : next_ + 1;
    out = {filled_, failures_, slow_};
    return true;
  }

  window_totals totals() noexcept {
    spin_guard g(lock_);
    return {filled_, failures_, slow_};
  }

  /// Empties the window; calls admitted before `generation` are not recorded.
  void reset(std::uint64_t generation) noexcept {
    spin_guard g(lock_);
    generation_ = generation;
    std::fill_n(bits_.get(), 2 * words(), std::uint64_t{0});
    next_ = filled_ = failures_ = slow_ = 0;
  }

 private:
  std::size_t words() const noexcept { return (size_ + 63) / 64; }

  spinlock lock_;  // everything below
  std::uint64_t generation_ = 1;
  std::uint32_t size_;
  std::uint32_t next_ = 0;
  std::uint32_t filled_ = 0;
  std::uint32_t failures_ = 0;
  std::uint32_t slow_ = 0;
  std::unique_ptr<std::uint64_t[]> bits_;  // failure bits, then slow bits
};

}  // namespace levee::detail
