// The demo's progress line (samples/demo/progress.hpp): in place on a
// terminal, one plain line per update anywhere else (a log, CI).
#include "../samples/demo/progress.hpp"

#include <catch2/catch.hpp>

#include <cstdio>
#include <string>

namespace {

// Everything written to `f` so far.
std::string contents(std::FILE* f) {
  std::fflush(f);
  std::rewind(f);
  std::string s;
  for (int c; (c = std::fgetc(f)) != EOF;) s.push_back(static_cast<char>(c));
  return s;
}

}  // namespace

TEST_CASE("demo progress text: carriage return on a terminal, a plain line elsewhere", "[demo]") {
  CHECK(demo::progress_text("  breaker  healthy t=5s", true) == "\r  breaker  healthy t=5s   ");
  CHECK(demo::progress_text("  breaker  healthy t=5s", false) == "  breaker  healthy t=5s\n");
  CHECK(demo::progress_text("  a   ", false) == "  a\n");
  CHECK(demo::progress_text("", false) == "\n");
}

TEST_CASE("demo progress line to a file: one line per update, no carriage return", "[demo]") {
  std::FILE* f = std::tmpfile();
  REQUIRE(f);
  {
    demo::progress_line progress(f);  // a file: not a terminal
    CHECK_FALSE(progress.terminal());
    for (int i = 0; i < 3; ++i) progress.print("  breaker %-8s t=%4ds   ", "healthy", i);
    progress.finish();
  }
  const std::string s = contents(f);
  std::fclose(f);
  CHECK(s ==
        "  breaker healthy  t=   0s\n  breaker healthy  t=   1s\n  breaker healthy  t=   2s\n");
  CHECK(s.find('\r') == std::string::npos);
}

TEST_CASE("demo progress line on a terminal: rewritten in place, one newline at the end",
          "[demo]") {
  std::FILE* f = std::tmpfile();
  REQUIRE(f);
  {
    demo::progress_line progress(f, true);
    progress.update("  t=1s");
    progress.update("  t=2s");
    progress.finish();
    progress.finish();  // a second finish adds nothing
  }
  const std::string s = contents(f);
  std::fclose(f);
  CHECK(s == "\r  t=1s   \r  t=2s   \n");
}
