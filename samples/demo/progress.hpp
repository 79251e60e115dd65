// The demo's progress line. On a terminal it rewrites itself in place (a
// carriage return, no newline). Anywhere else (a file, a pipe, a CI log) a
// carriage return does not go back: every update would be appended to one
// line thousands of characters long. There each update is a plain line of
// its own.
#pragma once

#include <unistd.h>

#include <cstdarg>
#include <cstdio>
#include <string>
#include <string_view>

namespace demo {

/// What one update writes: on a terminal "\r", the text and three spaces
/// (which blank what a longer previous update left); elsewhere the text
/// without its trailing spaces, then a newline.
inline std::string progress_text(std::string_view text, bool terminal) {
  if (terminal) {
    std::string out = "\r";
    out.append(text);
    out.append("   ");
    return out;
  }
  const auto last = text.find_last_not_of(' ');
  std::string out(text.substr(0, last == std::string_view::npos ? 0 : last + 1));
  out.push_back('\n');
  return out;
}

/// A progress line on `out` (stderr in the demo).
class progress_line {
 public:
  /// A terminal when `out` is one (isatty).
  explicit progress_line(std::FILE* out) : progress_line(out, ::isatty(::fileno(out)) != 0) {}
  progress_line(std::FILE* out, bool terminal) noexcept : out_(out), terminal_(terminal) {}
  progress_line(const progress_line&) = delete;
  progress_line& operator=(const progress_line&) = delete;

  bool terminal() const noexcept { return terminal_; }

  /// Shows `text`: rewrites the line on a terminal, adds a line elsewhere.
  void update(std::string_view text) {
    const std::string s = progress_text(text, terminal_);
    std::fwrite(s.data(), 1, s.size(), out_);
    std::fflush(out_);
    pending_ = terminal_;
  }

  /// `update` with a printf format.
  [[gnu::format(printf, 2, 3)]] void print(const char* format, ...) {
    char text[512];
    std::va_list args;
    va_start(args, format);
    std::vsnprintf(text, sizeof text, format, args);
    va_end(args);
    update(text);
  }

  /// Ends the line: a newline after the last update on a terminal, nothing
  /// elsewhere (every line already ended).
  void finish() {
    if (pending_) std::fputc('\n', out_);
    std::fflush(out_);
    pending_ = false;
  }

 private:
  std::FILE* out_;
  bool terminal_;
  bool pending_ = false;
};

}  // namespace demo
