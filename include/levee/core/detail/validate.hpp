// levee: the one way options are validated.
//
// Every options struct has a `validate(const X&)` next to it (found by ADL)
// that throws `std::invalid_argument` naming the member; `checked` validates
// and returns the options, for constructors' member initialisers.
#pragma once

#include <utility>

namespace levee::detail {

/// Throws `std::invalid_argument("<type>::<member> <rule>")`.
[[noreturn]] void reject_option(const char* type, const char* member, const char* rule);

/// Validates `o` (ADL `validate`) and returns it.
template <class Options>
Options checked(Options o) {
  validate(o);
  return o;
}

}  // namespace levee::detail
