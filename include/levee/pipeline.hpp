/// \file
/// `<levee/pipeline.hpp>`: the pipeline (`<levee/pipeline/pipeline.hpp>`) and
/// the fallback (`<levee/pipeline/fallback.hpp>`).
#pragma once

#include <levee/pipeline/fallback.hpp>
#include <levee/pipeline/pipeline.hpp>
