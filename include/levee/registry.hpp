/// \file
/// `<levee/registry.hpp>` is `<levee/registry/registry.hpp>` (kept so that existing includes work).
#pragma once

#include <levee/registry/registry.hpp>
