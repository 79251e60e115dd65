// levee: the retry layer's small parts: its random generator, and the
// completion signature of `async_retry`.
#pragma once

#include <levee/detail/result_shape.hpp>

#include <cstdint>
#include <exception>
#include <type_traits>

namespace levee::detail {

/// splitmix64: small, fast, and the same sequence on every platform.
struct splitmix64 {
  std::uint64_t state;
  std::uint64_t next() noexcept {
    std::uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  /// Uniform in [0, 1).
  double unit() noexcept { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
};
std::uint64_t random_seed() noexcept;

/// `async_retry`'s completion signature for a factory of `awaitable<T>`:
/// `co_spawn`'s, `void(std::exception_ptr, T)` or `void(std::exception_ptr)`.
template <class Factory, class Awaitable = std::invoke_result_t<Factory&>>
struct retry_signature {
  using value_type = typename awaitable_traits<Awaitable>::value_type;
  using type = std::conditional_t<std::is_void_v<value_type>, void(std::exception_ptr),
                                  void(std::exception_ptr, value_type)>;
};
template <class Factory>
using retry_signature_t = typename retry_signature<Factory>::type;

}  // namespace levee::detail
