// The compiled part of levee: its own non-template code, the HTTP client among
// it. Asio and Beast stay header-only unless LEVEE_ASIO_SEPARATE_COMPILATION is
// ON (lib/asio.cpp).
#include <levee/src.hpp>
