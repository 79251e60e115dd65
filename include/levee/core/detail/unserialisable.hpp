// levee: the refusal of a call whose executor cannot be serialised
// (timeout/detail/race.hpp, `can_serialize`), a type of its own so that the
// layers around the refusing one (retry, fallback, pipeline) let it through.
#pragma once

#include <stdexcept>

namespace levee::detail {

/// The refusal of a call on an executor that cannot be serialised: an
/// `std::invalid_argument` of its own type, so that a layer around the
/// refusing one (a retry, a fallback, a pipeline) lets it through instead of
/// taking it for a failed call.
class unserialisable_executor : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

}  // namespace levee::detail
