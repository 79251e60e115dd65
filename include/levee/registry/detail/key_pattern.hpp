// levee: the registry's key patterns (registry_options::overrides): `*`
// stands for any run of characters, possibly empty.
#pragma once

#include <cstddef>
#include <string_view>

namespace levee::detail {

/// True when `name` is a pattern (holds a `*`), not a key.
inline bool is_key_pattern(std::string_view name) noexcept {
  return name.find('*') != std::string_view::npos;
}

/// True when `key` matches `pattern`. Greedy with one backtrack point (the
/// last `*`): O(pattern x key) at worst, no recursion.
inline bool key_matches(std::string_view pattern, std::string_view key) noexcept {
  std::size_t p = 0, k = 0;
  std::size_t star = std::string_view::npos, resume = 0;
  while (k < key.size()) {
    if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      resume = k;
    } else if (p < pattern.size() && pattern[p] == key[k]) {
      ++p;
      ++k;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      k = ++resume;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

/// True when pattern `a` is more specific than pattern `b`: more characters
/// other than `*`, then fewer `*`, then the smaller in byte order.
inline bool more_specific(std::string_view a, std::string_view b) noexcept {
  std::size_t stars_a = 0, stars_b = 0;
  for (char c : a) stars_a += c == '*';
  for (char c : b) stars_b += c == '*';
  const std::size_t literal_a = a.size() - stars_a, literal_b = b.size() - stars_b;
  if (literal_a != literal_b) return literal_a > literal_b;
  if (stars_a != stars_b) return stars_a < stars_b;
  return a < b;
}

}  // namespace levee::detail
