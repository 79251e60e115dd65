#include "http_support.hpp"

namespace levee_test {

std::vector<flaky::phase> phases(std::initializer_list<const char*> specs) {
  std::vector<flaky::phase> out;
  for (const char* spec : specs) {
    std::string error;
    auto p = flaky::parse_phase(spec, error);
    REQUIRE(p);
    out.push_back(*p);
  }
  return out;
}

}  // namespace levee_test
