/// \file
/// `<levee/timeout.hpp>` is `<levee/timeout/timeout.hpp>` and `<levee/timeout/deadline.hpp>`
/// (kept so that existing includes work).
#pragma once

#include <levee/timeout/deadline.hpp>
#include <levee/timeout/timeout.hpp>
