// levee: the HTTP classifier, compiled once in lib/.
#pragma once

#include <levee/core/error.hpp>
#include <levee/http/classify.hpp>
#include <levee/http/client.hpp>
#include <levee/http/error.hpp>
#include <levee/retry/retry.hpp>

#include <array>
#include <cctype>
#include <charconv>

namespace levee::http {

namespace {

const response* find_response(const call_result& r) noexcept {
  return r.value<response>();
}

bool overloaded(unsigned status) noexcept {
  return status == 429 || status / 100 == 5;
}

// ---- HTTP-date ----------------------------------------------------------------

struct cursor {
  std::string_view s;
  bool eat(char c) noexcept {
    if (s.empty() || s.front() != c) return false;
    s.remove_prefix(1);
    return true;
  }
  bool eat(std::string_view word) noexcept {
    if (s.substr(0, word.size()) != word) return false;
    s.remove_prefix(word.size());
    return true;
  }
  // Exactly `digits` decimal digits (or, with `leading_space`, a space then
  // digits-1, as asctime writes single-digit days).
  bool number(int digits, int& out, bool leading_space = false) noexcept {
    if (leading_space && !s.empty() && s.front() == ' ') {
      s.remove_prefix(1);
      --digits;
    }
    if (static_cast<int>(s.size()) < digits) return false;
    out = 0;
    for (int i = 0; i < digits; ++i) {
      const char c = s[static_cast<std::size_t>(i)];
      if (c < '0' || c > '9') return false;
      out = out * 10 + (c - '0');
    }
    s.remove_prefix(static_cast<std::size_t>(digits));
    return true;
  }
};

constexpr std::array<std::string_view, 7> short_days = {"Mon", "Tue", "Wed", "Thu",
                                                        "Fri", "Sat", "Sun"};
constexpr std::array<std::string_view, 7> long_days = {
    "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"};
constexpr std::array<std::string_view, 12> months = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

template <std::size_t N>
bool one_of(cursor& c, const std::array<std::string_view, N>& words,
            int* index = nullptr) noexcept {
  for (std::size_t i = 0; i < N; ++i) {
    if (c.eat(words[i])) {
      if (index) *index = static_cast<int>(i);
      return true;
    }
  }
  return false;
}

bool time_of_day(cursor& c, int& h, int& m, int& sec) noexcept {
  return c.number(2, h) && c.eat(':') && c.number(2, m) && c.eat(':') && c.number(2, sec) &&
         h < 24 && m < 60 && sec < 61;
}

std::optional<std::chrono::system_clock::time_point> make_time(int year, int month, int day, int h,
                                                               int m, int s) noexcept {
  using namespace std::chrono;
  // system_clock counts nanoseconds in 64 bits: about 1678 to 2262. Dates
  // outside [1900, 2200] are refused rather than overflowed (found by the
  // fuzzer: "Date: Sun, 06 Nov 0997 ...").
  if (year < 1900 || year > 2200) return std::nullopt;
  const year_month_day ymd{std::chrono::year(year),
                           std::chrono::month(static_cast<unsigned>(month)),
                           std::chrono::day(static_cast<unsigned>(day))};
  if (!ymd.ok()) return std::nullopt;
  return sys_days(ymd) + hours(h) + minutes(m) + seconds(s);
}

}  // namespace

std::optional<std::chrono::system_clock::time_point> parse_http_date(
    std::string_view text) noexcept {
  int day = 0, month = 0, year = 0, h = 0, m = 0, s = 0;
  {  // IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
    cursor c{text};
    if (one_of(c, short_days) && c.eat(", ") && c.number(2, day) && c.eat(' ') &&
        one_of(c, months, &month) && c.eat(' ') && c.number(4, year) && c.eat(' ') &&
        time_of_day(c, h, m, s) && c.eat(" GMT") && c.s.empty())
      return make_time(year, month + 1, day, h, m, s);
  }
  {  // RFC 850: Sunday, 06-Nov-94 08:49:37 GMT (two-digit years: 1970-2069)
    cursor c{text};
    if (one_of(c, long_days) && c.eat(", ") && c.number(2, day) && c.eat('-') &&
        one_of(c, months, &month) && c.eat('-') && c.number(2, year) && c.eat(' ') &&
        time_of_day(c, h, m, s) && c.eat(" GMT") && c.s.empty())
      return make_time(year < 70 ? 2000 + year : 1900 + year, month + 1, day, h, m, s);
  }
  {  // asctime: Sun Nov  6 08:49:37 1994
    cursor c{text};
    if (one_of(c, short_days) && c.eat(' ') && one_of(c, months, &month) && c.eat(' ') &&
        c.number(2, day, true) && c.eat(' ') && time_of_day(c, h, m, s) && c.eat(' ') &&
        c.number(4, year) && c.s.empty())
      return make_time(year, month + 1, day, h, m, s);
  }
  return std::nullopt;
}

std::optional<std::chrono::nanoseconds> parse_retry_after(
    std::string_view value, std::chrono::system_clock::time_point now) noexcept {
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
  while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
  if (value.empty()) return std::nullopt;
  if (value.front() >= '0' && value.front() <= '9') {
    std::uint64_t seconds = 0;
    const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), seconds);
    if (ec != std::errc() || end != value.data() + value.size()) return std::nullopt;
    // Anything beyond a day is clamped (and the retry layer caps it further).
    seconds = std::min<std::uint64_t>(seconds, 86400);
    return std::chrono::seconds(seconds);
  }
  const auto date = parse_http_date(value);
  if (!date) return std::nullopt;
  if (*date <= now) return std::chrono::nanoseconds::zero();
  // In whole seconds first: two dates up to 300 years apart (1900 to 2200)
  // do not fit a difference in nanoseconds. Clamped to a day, as above.
  using std::chrono::seconds;
  const auto apart = std::chrono::floor<seconds>(*date) - std::chrono::floor<seconds>(now);
  return std::chrono::nanoseconds(std::min(apart, seconds(86400)));
}

outcome classify(const call_result& r) noexcept {
  if (const auto* ec = r.error(); ec && *ec) {
    // A bad URL or request never reached the downstream: it says nothing of
    // its health.
    if (is_invalid_input(*ec)) return outcome::ignored;
    // Nor does a rejection by an inner levee layer (an adaptive limit, a
    // bulkhead inside the breaker).
    return is_cancellation(*ec) || is_rejection(*ec) ? outcome::ignored : outcome::failure;
  }
  if (r.threw()) return default_classify(r);
  if (const response* res = find_response(r)) {
    return overloaded(res->result_int()) ? outcome::failure : outcome::success;
  }
  return default_classify(r);
}

bool retryable(const call_result& r) noexcept {
  if (const auto* ec = r.error(); ec && *ec) return !is_invalid_input(*ec) && default_retryable(r);
  if (r.threw()) return default_retryable(r);
  if (const response* res = find_response(r)) return overloaded(res->result_int());
  return false;
}

std::optional<std::chrono::nanoseconds> retry_after(const call_result& r) noexcept {
  const response* res = find_response(r);
  if (!res) return std::nullopt;
  if (const auto* ec = r.error(); ec && *ec) return std::nullopt;
  const unsigned status = res->result_int();
  if (status != 429 && status != 503) return std::nullopt;
  const auto field = res->find(boost::beast::http::field::retry_after);
  if (field == res->end()) return std::nullopt;
  auto now = std::chrono::system_clock::now();
  if (const auto date = res->find(boost::beast::http::field::date); date != res->end()) {
    if (auto sent = parse_http_date(date->value())) now = *sent;
  }
  return parse_retry_after(field->value(), now);
}

}  // namespace levee::http
