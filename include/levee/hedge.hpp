/// \file
/// `<levee/hedge.hpp>` is `<levee/hedge/hedge.hpp>`.
#pragma once

#include <levee/hedge/hedge.hpp>
