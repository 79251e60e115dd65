/// \file
/// `<levee/circuit_breaker.hpp>` is `<levee/breaker/circuit_breaker.hpp>` (kept so that existing
/// includes work).
#pragma once

#include <levee/breaker/circuit_breaker.hpp>
