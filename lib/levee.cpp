// The compiled part of levee: Asio and Beast (separate compilation) and
// levee's own non-template code, the HTTP client among it.
#include <boost/asio/impl/src.hpp>
#include <boost/beast/src.hpp>

#include <levee/src.hpp>
