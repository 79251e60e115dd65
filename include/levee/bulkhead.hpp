/// \file
/// `<levee/bulkhead.hpp>` is `<levee/limit/bulkhead.hpp>` (kept so that existing includes work).
#pragma once

#include <levee/limit/bulkhead.hpp>
