// levee: the completion signature of `async_retry` (the retry layer's random
// generator is core/detail/random.hpp's).
#pragma once

#include <levee/core/detail/result_shape.hpp>

#include <exception>
#include <type_traits>

namespace levee::detail {

/// `async_retry`'s completion signature for a factory of `awaitable<T>`:
/// `co_spawn`'s, `void(std::exception_ptr, T)` or `void(std::exception_ptr)`.
template <class Factory, class Awaitable = std::invoke_result_t<Factory&>>
struct retry_signature {
  using value_type = typename awaitable_traits<Awaitable>::value_type;
  using type = spawn_signature_t<value_type>;
};
template <class Factory>
using retry_signature_t = typename retry_signature<Factory>::type;

}  // namespace levee::detail
