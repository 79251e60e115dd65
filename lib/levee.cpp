// The compiled part of levee: Asio (separate compilation) and levee's own
// non-template code. Beast joins here with the HTTP layer.
#include <boost/asio/impl/src.hpp>

#include <levee/src.hpp>
