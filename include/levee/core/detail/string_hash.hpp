// levee: a transparent string hash, for maps keyed by std::string that are
// searched by std::string_view without a copy.
#pragma once

#include <cstddef>
#include <functional>
#include <string_view>

namespace levee::detail {

struct string_hash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept {
    return std::hash<std::string_view>{}(s);
  }
};

}  // namespace levee::detail
