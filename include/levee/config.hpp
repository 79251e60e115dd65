/// \file
/// `<levee/config.hpp>` is `<levee/config/config.hpp>`: a registry's options from a JSON file.
#pragma once

#include <levee/config/config.hpp>
