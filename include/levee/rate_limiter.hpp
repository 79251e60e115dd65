/// \file
/// `<levee/rate_limiter.hpp>` is `<levee/limit/rate_limiter.hpp>`.
#pragma once

#include <levee/limit/rate_limiter.hpp>
