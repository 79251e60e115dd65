/// \file
/// `<levee/manual_clock.hpp>` is `<levee/core/manual_clock.hpp>` (kept so that existing includes
/// work).
#pragma once

#include <levee/core/manual_clock.hpp>
