// levee: a byte bound on Redis replies (RESP2), checked before hiredis's
// reader sees the bytes (fleet/detail/redis_connection.hpp).
//
// hiredis's reader keeps a reply's bytes until the reply is complete and
// allocates an array's element table as soon as its length is read: a server
// announcing `$4294967296` or `*4294967295` and streaming data grows the
// process without bound. `redis_reply_bound` follows the stream's framing
// (type byte, header line, bulk payload, nested arrays) incrementally and
// charges the reply in progress its bytes plus `element_cost` per element
// (about what hiredis allocates per element); a reply that would cost more
// than the limit, by what it announces or by what it streams, is refused
// before any of it is buffered. A complete reply resets the charge. Sans I/O.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace levee::detail {

class redis_reply_bound {
 public:
  /// Charged per element (hiredis's redisReply and its slot in an array).
  static constexpr std::size_t element_cost = 64;

  explicit redis_reply_bound(std::size_t limit) : limit_(limit) {}

  /// Follows `n` more bytes of the stream. False when they are not RESP2 or
  /// the reply in progress exceeds the limit; then `error()` says why and the
  /// bound stays failed.
  bool feed(const char* p, std::size_t n) {
    if (!error_.empty()) return false;
    std::size_t i = 0;
    while (i < n) {
      accepted_ = i;
      switch (at_) {
        case at::type: {
          const char c = p[i++];
          if (c != '+' && c != '-' && c != ':' && c != '$' && c != '*')
            return fail("protocol error: unexpected byte " + std::to_string(int(c) & 0xff));
          kind_ = c;
          digits_.clear();
          if (!charge(1 + element_cost)) return false;
          at_ = at::line;
          break;
        }
        case at::line: {
          std::size_t j = i;
          while (j < n && p[j] != '\n') ++j;
          const std::size_t taken = j - i + (j < n ? 1 : 0);
          if (kind_ == '$' || kind_ == '*' || kind_ == ':') {
            digits_.append(p + i, j - i);
            if (digits_.size() > 24) return fail("protocol error: a length line too long");
          }
          if (!charge(taken)) return false;
          i += taken;
          if (j == n) break;  // the line goes on in the next bytes
          if (!end_of_line()) return false;
          break;
        }
        case at::bulk: {
          const std::uint64_t take = std::min<std::uint64_t>(bulk_left_, n - i);
          i += static_cast<std::size_t>(take);
          bulk_left_ -= take;
          if (!charge(static_cast<std::size_t>(take))) return false;
          if (bulk_left_ == 0) element_done();
          break;
        }
      }
    }
    accepted_ = n;
    return true;
  }

  /// Of the bytes of the last `feed`, those before the one refused (all of
  /// them when it returned true): the replies they complete are sound.
  std::size_t accepted() const noexcept { return accepted_; }

  /// What the reply in progress costs so far (0 between replies).
  std::size_t buffered() const noexcept { return used_; }
  std::size_t limit() const noexcept { return limit_; }
  const std::string& error() const noexcept { return error_; }

 private:
  enum class at { type, line, bulk };

  bool end_of_line() {
    if (kind_ == '+' || kind_ == '-' || kind_ == ':') {
      element_done();
      return true;
    }
    if (!digits_.empty() && digits_.back() == '\r') digits_.pop_back();
    long long v = 0;
    bool negative = false;
    std::size_t k = 0;
    if (k < digits_.size() && digits_[k] == '-') negative = true, ++k;
    if (k == digits_.size()) return fail("protocol error: a bad length");
    for (; k < digits_.size(); ++k) {
      const char d = digits_[k];
      if (d < '0' || d > '9' || v > (1LL << 50)) return fail("protocol error: a bad length");
      v = v * 10 + (d - '0');
    }
    if (negative) {
      if (v != 1) return fail("protocol error: a bad length");
      element_done();  // nil
      return true;
    }
    const auto count = static_cast<std::uint64_t>(v);
    if (kind_ == '$') {
      if (count + 2 > remaining())
        return fail("reply too large: a bulk string of " + std::to_string(count) +
                    " bytes announced");
      bulk_left_ = count + 2;  // and its CRLF
      at_ = at::bulk;
      return true;
    }
    if (count > remaining() / (3 + element_cost))
      return fail("reply too large: an array of " + std::to_string(count) + " elements announced");
    if (count == 0) {
      element_done();
      return true;
    }
    open_.push_back(count);
    at_ = at::type;
    return true;
  }

  // An element ended: it counts in its array; a complete top-level reply
  // resets the charge.
  void element_done() {
    at_ = at::type;
    while (!open_.empty()) {
      if (--open_.back() > 0) return;
      open_.pop_back();
    }
    used_ = 0;
  }

  std::uint64_t remaining() const noexcept { return limit_ - used_; }

  bool charge(std::size_t n) {
    if (n > limit_ - used_) {
      return fail("reply too large: " + std::to_string(used_) + " bytes buffered and " +
                  std::to_string(n) + " more coming");
    }
    used_ += n;
    return true;
  }

  bool fail(std::string why) {
    error_ = std::move(why);
    if (error_.starts_with("reply too large"))
      error_ += " (max_reply_size " + std::to_string(limit_) + ")";
    return false;
  }

  std::size_t limit_;
  std::size_t used_ = 0;
  std::size_t accepted_ = 0;
  at at_ = at::type;
  char kind_ = 0;
  std::string digits_;
  std::uint64_t bulk_left_ = 0;
  std::vector<std::uint64_t> open_;  // elements still expected by each open array
  std::string error_;
};

}  // namespace levee::detail
