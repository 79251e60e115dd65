// The consumer's own copy of Asio's compiled sources, as Asio documents for
// separate compilation (its target defines BOOST_ASIO_SEPARATE_COMPILATION).
#include <boost/asio/impl/src.hpp>
