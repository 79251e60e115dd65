// The compiled part of levee: Asio (with its SSL part) and Beast (separate compilation) and
// levee's own non-template code, the HTTP client among it.
#include <boost/asio/impl/src.hpp>
#include <boost/asio/ssl/impl/src.hpp>
#include <boost/beast/src.hpp>

#include <levee/src.hpp>
