// The demo's command line (Boost.Program_options). Run levee-demo --help.
#pragma once

#include "scenario.hpp"

namespace demo {

/// What the command line asks for.
struct command_line {
  enum class action {
    run,   ///< run the modes with `chosen`
    help,  ///< print `usage` and exit
    error  ///< exit with status 2 (the reason is on stderr already)
  };
  action what = action::run;
  settings chosen;
};

/// The --help text.
extern const char* const usage;

/// Reads the options; reports a mistake on stderr.
command_line parse_command_line(int argc, const char* const* argv);

}  // namespace demo
