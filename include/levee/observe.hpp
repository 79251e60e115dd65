/// \file
/// `<levee/observe.hpp>` is `<levee/breaker/observe.hpp>` (kept so that existing includes work).
#pragma once

#include <levee/breaker/observe.hpp>
