// levee: the umbrella header.
#pragma once

#include <levee/circuit_breaker.hpp>
#include <levee/classify.hpp>
#include <levee/error.hpp>
#include <levee/manual_clock.hpp>
#include <levee/options.hpp>
