/// \file
/// `<levee/adaptive_limit.hpp>` is `<levee/limit/adaptive_limit.hpp>` (kept so that existing
/// includes work).
#pragma once

#include <levee/limit/adaptive_limit.hpp>
