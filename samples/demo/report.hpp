// The demo's report: a table per phase on stdout, the timeline as CSV, the
// chart drawn by gnuplot from it, and the JSON summary CI checks.
#pragma once

#include "scenario.hpp"

#include <boost/json/fwd.hpp>

#include <ostream>

#include <string>
#include <vector>

namespace demo {

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
