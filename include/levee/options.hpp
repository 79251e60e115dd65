/// \file
/// `<levee/options.hpp>` is `<levee/breaker/options.hpp>` (kept so that existing includes work).
#pragma once

#include <levee/breaker/options.hpp>
