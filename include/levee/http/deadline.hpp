/// \file
/// Deadlines across services: the header levee's HTTP client sends with the
/// time left of the caller's `with_deadline`, and the server-side reader that
/// turns it into a deadline for the handler's own calls (README, "Deadlines
/// across services").
#pragma once

#include <levee/core/detail/event_hub.hpp>
#include <levee/core/detail/prometheus_text.hpp>
#include <levee/core/detail/saturating.hpp>
#include <levee/core/detail/validate.hpp>
#include <levee/http/error.hpp>

#include <boost/beast/http/message.hpp>
#include <boost/beast/http/status.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/system/error_code.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace levee::http {

/// The header's default name (`client_options::deadline_header`,
/// `deadline_options::header`).
inline constexpr std::string_view default_deadline_header = "Levee-Deadline-Ms";

/// The header's value for `left`: the whole milliseconds, rounded down, as a
/// decimal integer (`"180"`); nothing when less than 1 ms is left (the client
/// then sends no request at all) or `left` is `max()` (no deadline).
/// \param left The time left.
/// \return the value, or nothing.
inline std::optional<std::string> format_deadline(std::chrono::nanoseconds left) {
  if (left == std::chrono::nanoseconds::max()) return std::nullopt;
  const auto ms = std::chrono::floor<std::chrono::milliseconds>(left);
  if (ms.count() < 1) return std::nullopt;
  return std::to_string(ms.count());
}

/// Reads a header value: 1 to 19 decimal digits (leading zeros allowed, no
/// sign, no space: Beast has trimmed the header's own), milliseconds. More
/// than `nanoseconds::max()` (292 years) saturates to it.
/// \param value The header's value.
/// \param out The time left; set only on success.
/// \return zero, or `error::malformed_deadline`.
inline boost::system::error_code parse_deadline(std::string_view value,
                                                std::chrono::nanoseconds& out) noexcept {
  if (value.empty() || value.size() > 19) return error::malformed_deadline;
  std::uint64_t ms = 0;  // 19 digits < 10^19 < 2^64: no overflow
  for (char c : value) {
    if (c < '0' || c > '9') return error::malformed_deadline;
    ms = ms * 10 + static_cast<std::uint64_t>(c - '0');
  }
  constexpr std::uint64_t top = static_cast<std::uint64_t>(std::chrono::nanoseconds::max().count());
  out = ms > top / 1000000 ? std::chrono::nanoseconds::max()
                           : std::chrono::nanoseconds(static_cast<std::int64_t>(ms) * 1000000);
  return {};
}

/// A deadline reader's options. Plain struct, a default on every member.
struct deadline_options {
  /// The header read. A token (RFC 9110).
  std::string header = std::string(default_deadline_header);
  /// Taken off the caller's time for the handler's own calls: the time to
  /// build and send the answer, and the network's. >= 0. A request whose
  /// header leaves no more than this is refused as expired.
  std::chrono::nanoseconds margin = std::chrono::milliseconds(5);
  /// The longest time a handler is given, with or without the header (an
  /// absurd header, `9999999999999999999`, gets this). > 0; `max()`: no cap,
  /// and no deadline for a request without the header.
  std::chrono::nanoseconds cap = std::chrono::nanoseconds::max();
};

/// Checks every member of `options`.
/// \param options The options to check.
/// \throws std::invalid_argument naming the first invalid member.
inline void validate(const deadline_options& options) {
  auto reject = [](const char* member, const char* rule) {
    levee::detail::reject_option("deadline_options", member, rule);
  };
  constexpr std::string_view specials = "!#$%&'*+-.^_`|~";
  if (options.header.empty()) reject("header", "must not be empty");
  for (char c : options.header) {
    const bool alnum = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    if (!alnum && specials.find(c) == std::string_view::npos)
      reject("header", "must be a token (RFC 9110)");
  }
  if (options.margin < std::chrono::nanoseconds::zero()) reject("margin", "must not be negative");
  if (options.cap <= std::chrono::nanoseconds::zero()) reject("cap", "must be greater than zero");
}

/// What `deadline_reader::read` found in a request.
struct incoming_deadline {
  /// Zero, `error::deadline_expired` or `error::malformed_deadline`: refuse
  /// the request (`deadline_reader::refusal`).
  boost::system::error_code error;
  /// Whether the request had the header.
  bool present = false;
  /// The handler's deadline for its own calls: the caller's minus the margin
  /// (capped by `deadline_options::cap`); `time_point::max()`: none.
  std::chrono::steady_clock::time_point at = std::chrono::steady_clock::time_point::max();

  /// The time left until `at`, for `with_deadline(d.remaining(), call)`:
  /// `max()` when there is no deadline, never negative.
  /// \param now The clock's now.
  /// \return the time left, saturated.
  std::chrono::nanoseconds remaining(
      std::chrono::steady_clock::time_point now = std::chrono::steady_clock::now()) const noexcept {
    if (at == std::chrono::steady_clock::time_point::max()) return std::chrono::nanoseconds::max();
    if (now >= at) return std::chrono::nanoseconds::zero();
    return std::chrono::duration_cast<std::chrono::nanoseconds>(at - now);
  }
};

/// A deadline reader's counters.
struct deadline_stats {
  std::uint64_t accepted = 0;   ///< requests with a valid header and time left
  std::uint64_t absent = 0;     ///< requests without the header
  std::uint64_t expired = 0;    ///< refused: the caller's deadline passed (504)
  std::uint64_t malformed = 0;  ///< refused: a malformed header (400)
  /// Events a listener missed because a post failed to allocate (0 unless
  /// memory ran out). Not in the exposition.
  std::uint64_t events_lost = 0;
};

/// What a deadline reader tells its listeners (`deadline_reader::listen`).
/// The values are bits, for a mask.
enum class deadline_event_kind : std::uint32_t {
  expired = 1,    ///< a request refused: its deadline had passed (504)
  malformed = 2,  ///< a request refused: its header was malformed or repeated (400)
};
/// Every `deadline_event_kind` bit.
inline constexpr std::uint32_t all_deadline_events = 3;

/// One deadline reader event, as a listener receives it.
struct deadline_event {
  deadline_event_kind kind = deadline_event_kind::expired;  ///< what happened
  /// expired: the time the caller had left, from the header (at most the
  /// margin).
  std::chrono::nanoseconds asked{};
  /// malformed: the header's value, its first 64 bytes (the first of
  /// repeated headers); expired: empty.
  std::string value;
  std::chrono::system_clock::time_point when;  ///< wall-clock time of the event
};

namespace detail {
inline constexpr const char* deadline_family = "levee_http_deadline_requests_total";

/// The family's HELP and TYPE lines.
inline void write_deadline_family(std::ostream& out) {
  out << "# HELP " << deadline_family
      << " Requests a deadline reader read, by outcome (expired: refused with 504, malformed: "
         "refused with 400).\n# TYPE "
      << deadline_family << " counter\n";
}

/// One reader's four rows; `labels` (empty, or `reader="...",`) goes before
/// the outcome label.
inline void write_deadline_rows(std::ostream& out, const deadline_stats& stats,
                                std::string_view labels) {
  const std::pair<const char*, std::uint64_t> rows[] = {{"accepted", stats.accepted},
                                                        {"absent", stats.absent},
                                                        {"expired", stats.expired},
                                                        {"malformed", stats.malformed}};
  for (const auto& [outcome, value] : rows)
    out << deadline_family << '{' << labels << "outcome=\"" << outcome << "\"} " << value << '\n';
}
}  // namespace detail

/// Writes `stats` in the Prometheus text format, one counter family,
/// `levee_http_deadline_requests_total{outcome="accepted|absent|expired|malformed"}`
/// (expired: refused with 504; malformed: refused with 400).
/// \param out Where to write.
/// \param stats A reader's counters (`deadline_reader::stats`).
inline void write_prometheus(std::ostream& out, const deadline_stats& stats) {
  detail::write_deadline_family(out);
  detail::write_deadline_rows(out, stats, {});
}

/// One deadline reader's counters and the name that labels them.
struct named_deadline_stats {
  std::string name;      ///< the `reader` label's value (escaped when written)
  deadline_stats stats;  ///< `deadline_reader::stats`
};

/// Writes several readers' counters in the Prometheus text format, one
/// family, `levee_http_deadline_requests_total{reader="<name>",
/// outcome="accepted|absent|expired|malformed"}`, so that the readers of
/// several servers share one exposition (as `write_throttles_prometheus`
/// does for throttles).
/// \param out Where to write.
/// \param readers The readers' counters, each with a unique name (not
/// checked: two of one name, or this beside `write_prometheus` in one
/// exposition, repeat a series or the family, which Prometheus refuses).
inline void write_deadline_readers_prometheus(std::ostream& out,
                                              const std::vector<named_deadline_stats>& readers) {
  detail::write_deadline_family(out);
  for (const auto& r : readers)
    detail::write_deadline_rows(out, r.stats, "reader=\"" + levee::detail::escape(r.name) + "\",");
}

/// Reads the deadline header of requests on a server (Beast) and gives each
/// handler its deadline; counts what it saw, and tells listeners about the
/// requests it refuses (`listen`). Thread-safe: `read` from any thread. No
/// allocation, no lock while nobody listens.
class deadline_reader {
 public:
  /// \param options Validated (`validate`).
  /// \throws std::invalid_argument naming the member when `options` is invalid.
  explicit deadline_reader(deadline_options options = {})
      : options_((validate(options), std::move(options))) {}

  /// The deadline of the request whose header is `h`.
  /// \param h A Beast request header (or request).
  /// \param now The steady clock's now.
  /// \return the handler's deadline, or the reason to refuse the request.
  template <class Fields>
  incoming_deadline read(
      const boost::beast::http::header<true, Fields>& h,
      std::chrono::steady_clock::time_point now = std::chrono::steady_clock::now()) noexcept {
    incoming_deadline d;
    std::chrono::nanoseconds left = options_.cap;
    const auto count = h.count(options_.header);
    d.present = count > 0;
    if (count > 1) return malformed(d, h[options_.header]);
    if (count == 1) {
      std::chrono::nanoseconds asked{};
      const std::string_view value = h[options_.header];
      if (parse_deadline(value, asked)) return malformed(d, value);
      if (asked <= options_.margin) {
        if (events_.wants(deadline_event_kind::expired))
          emit(deadline_event{deadline_event_kind::expired, asked, {}, {}});
        return refuse(d, error::deadline_expired, expired_);
      }
      const auto usable = asked - options_.margin;  // > 0, no overflow
      if (usable < left) left = usable;
      accepted_.fetch_add(1, std::memory_order_relaxed);
    } else {
      absent_.fetch_add(1, std::memory_order_relaxed);
    }
    if (left != std::chrono::nanoseconds::max()) d.at = levee::detail::saturating_add(now, left);
    return d;
  }

  /// The answer to a refused request: `504 Gateway Timeout` when its deadline
  /// passed, `400 Bad Request` when the header is malformed, with a short
  /// plain-text body and the request's version and keep-alive.
  /// \param d What `read` returned (its `error` set).
  /// \param req The request.
  /// \return the response to send.
  template <class Body, class Fields>
  static boost::beast::http::response<boost::beast::http::string_body> refusal(
      const incoming_deadline& d, const boost::beast::http::request<Body, Fields>& req) {
    namespace bh = boost::beast::http;
    const bool expired = d.error == error::deadline_expired;
    bh::response<bh::string_body> res(
        expired ? bh::status::gateway_timeout : bh::status::bad_request, req.version());
    res.set(bh::field::content_type, "text/plain");
    res.keep_alive(req.keep_alive());
    res.body() = expired ? "deadline expired\n" : "malformed deadline header\n";
    res.prepare_payload();
    return res;
  }

  /// \return the counters now.
  deadline_stats stats() const noexcept {
    return {accepted_.load(std::memory_order_relaxed), absent_.load(std::memory_order_relaxed),
            expired_.load(std::memory_order_relaxed), malformed_.load(std::memory_order_relaxed),
            events_.lost()};
  }

  /// Adds a listener for the refusals in `mask` (`deadline_event_kind` bits,
  /// `all_deadline_events`). The reader has no executor of its own: the
  /// listener runs on `ex` (the server's, say), a posted copy of each event,
  /// never inside `read`. While nobody listens `read` pays one relaxed load
  /// per refusal; a listener costs a post (an allocation) per refusal it
  /// wants, and a short lock.
  /// \param mask The kinds wanted.
  /// \param fn The listener.
  /// \param ex Where it runs.
  /// \return an id for `unlisten`.
  std::uint64_t listen(std::uint32_t mask, std::function<void(const deadline_event&)> fn,
                       boost::asio::any_io_executor ex) {
    return events_.listen(mask, std::move(fn), std::move(ex));
  }
  /// Removes a listener: no event is posted to it after this returns.
  /// \param id What `listen` returned; an unknown id does nothing.
  void unlisten(std::uint64_t id) { events_.unlisten(id); }
  /// \return the options, as validated.
  const deadline_options& options() const noexcept { return options_; }

 private:
  static incoming_deadline refuse(incoming_deadline d, error e,
                                  std::atomic<std::uint64_t>& counter) noexcept {
    d.error = e;
    counter.fetch_add(1, std::memory_order_relaxed);
    return d;
  }

  incoming_deadline malformed(incoming_deadline d, std::string_view value) noexcept {
    if (events_.wants(deadline_event_kind::malformed)) {
      try {
        emit(deadline_event{
            deadline_event_kind::malformed, {}, std::string(value.substr(0, 64)), {}});
      } catch (...) {  // no memory for the value: the event goes without it
        events_.emit(deadline_event{deadline_event_kind::malformed, {}, {}, {}});
      }
    }
    return refuse(d, error::malformed_deadline, malformed_);
  }
  void emit(deadline_event e) noexcept {
    e.when = std::chrono::system_clock::now();
    events_.emit(e);
  }

  deadline_options options_;
  std::atomic<std::uint64_t> accepted_{0}, absent_{0}, expired_{0}, malformed_{0};
  levee::detail::event_hub<deadline_event> events_;
};

}  // namespace levee::http
