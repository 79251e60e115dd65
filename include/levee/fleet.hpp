/// \file
/// `<levee/fleet.hpp>` is `<levee/fleet/fleet.hpp>` (kept so that existing includes work).
#pragma once

#include <levee/fleet/fleet.hpp>
