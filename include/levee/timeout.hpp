/// \file
/// `<levee/timeout.hpp>` is `<levee/timeout/timeout.hpp>` (kept so that existing includes work).
#pragma once

#include <levee/timeout/timeout.hpp>
