// The demo's report: a table per phase on stdout, the timeline as CSV, the
// chart drawn by gnuplot from it, and the JSON summary CI checks.
#pragma once

#include "scenario.hpp"

#include <boost/json/fwd.hpp>

#include <iomanip>
#include <iostream>
#include <ostream>
#include <sstream>
#include <string>
#include <vector>

namespace demo {

/// `v` with `digits` decimals.
inline std::string fixed(double v, int digits = 0) {
  std::ostringstream o;
  o << std::fixed << std::setprecision(digits) << v;
  return o.str();
}

/// A duration in ms for people: "840 ms", "2.35 s", "30.5 s".
inline std::string human_ms(double ms) {
  if (ms >= 10000) return fixed(ms / 1000, 1) + " s";
  if (ms >= 1000) return fixed(ms / 1000, 2) + " s";
  return fixed(ms) + " ms";
}

/// Prints a table with a label column and one column per mode, on stdout:
/// `header(title)`, then `line(name, value)` with `value(result)` a row's
/// cell. `Result` has a `which` member that `to_string` names.
template <class Result>
struct mode_table {
  const std::vector<Result>& results;
  int label;
  int column;

  void header(const std::string& title) const {
    std::cout << '\n' << std::left << std::setw(label) << title;
    for (const auto& r : results)
      std::cout << std::right << std::setw(column) << to_string(r.which);
    std::cout << '\n'
              << std::string(
                     static_cast<std::size_t>(label + column * static_cast<int>(results.size())),
                     '-')
              << '\n';
  }
  template <class Value>
  void line(const std::string& name, Value value) const {
    std::cout << std::left << std::setw(label) << name;
    for (const auto& r : results) std::cout << std::right << std::setw(column) << value(r);
    std::cout << '\n';
  }
};

/// One table per phase, the modes side by side, then the recovery times.
void print_tables(const std::vector<flaky::phase>& schedule,
                  const std::vector<mode_result>& results);

/// One CSV row per 100 ms of real time and mode, to `path`.
void write_timeline(const settings& s, const std::vector<flaky::phase>& schedule,
                    const std::vector<mode_result>& results, const std::string& path);

/// Writes a gnuplot script next to the CSV and runs gnuplot to draw `png`;
/// false if gnuplot failed or is missing.
bool draw_chart(const std::vector<mode_result>& results, const std::vector<flaky::phase>& schedule,
                const settings& s, const std::string& csv, const std::string& png);

/// The figures as JSON, to `s.summary` (cmake/check-demo-summary.cmake reads
/// it in CI).
void write_summary(const settings& s, const std::vector<flaky::phase>& schedule,
                   const std::vector<mode_result>& results);

/// Writes `v` for people too: a member a line, a container of scalars on
/// one line, numbers with six significant digits (the summaries' layout).
void print_json(std::ostream& out, const boost::json::value& v, int indent = 0);

}  // namespace demo
