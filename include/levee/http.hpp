/// \file
/// The HTTP layer's umbrella header (Beast client, classifier).
#pragma once

#include <levee/http/classify.hpp>
#include <levee/http/client.hpp>
#include <levee/http/deadline.hpp>
#include <levee/http/error.hpp>
#include <levee/http/guarded.hpp>
