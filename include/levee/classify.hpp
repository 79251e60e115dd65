/// \file
/// `<levee/classify.hpp>` is `<levee/core/classify.hpp>` (kept so that existing includes work).
#pragma once

#include <levee/core/classify.hpp>
