/// \file
/// `<levee/vocabulary.hpp>` is `<levee/core/vocabulary.hpp>` (kept so that existing includes work).
#pragma once

#include <levee/core/vocabulary.hpp>
