/// \file
/// `<levee/throttle.hpp>` is `<levee/limit/throttle.hpp>`.
#pragma once

#include <levee/limit/throttle.hpp>
