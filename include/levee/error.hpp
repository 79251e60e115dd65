/// \file
/// `<levee/error.hpp>` is `<levee/core/error.hpp>` (kept so that existing includes work).
#pragma once

#include <levee/core/error.hpp>
