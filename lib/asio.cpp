// Asio (with its SSL part) and Beast, compiled once into liblevee: built only
// with LEVEE_ASIO_SEPARATE_COMPILATION=ON, which also exports
// BOOST_ASIO_SEPARATE_COMPILATION and BOOST_BEAST_SEPARATE_COMPILATION.
#include <boost/asio/impl/src.hpp>
#include <boost/asio/ssl/impl/src.hpp>
#include <boost/beast/src.hpp>
