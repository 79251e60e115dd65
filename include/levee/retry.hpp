/// \file
/// `<levee/retry.hpp>` is `<levee/retry/retry.hpp>` (kept so that existing includes work).
#pragma once

#include <levee/retry/retry.hpp>
