/// \file
/// `<levee/retry_budget.hpp>` is `<levee/retry/retry_budget.hpp>` (kept so that existing includes
/// work).
#pragma once

#include <levee/retry/retry_budget.hpp>
