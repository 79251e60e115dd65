// The compiled part of levee::config: a registry's options from a JSON
// document, read with Boost.JSON.
#include <levee/config/impl/config.ipp>
