// What the fuzz target needs of levee's compiled part, built with coverage:
// Asio's and Beast's non-template code (Beast's parser lives there) and levee's
// classifier, retry predicate and URL parser. The coroutine code of the HTTP
// client is left out: Clang 14 cannot emit coverage tables for split
// coroutine functions ("Cannot represent a difference across sections").
#include <boost/asio/impl/src.hpp>
#include <boost/beast/src.hpp>

#include <levee/core/impl/error.ipp>
#include <levee/http/impl/classify.ipp>
#include <levee/http/impl/error.ipp>
#include <levee/http/impl/response_reader.ipp>
#include <levee/http/impl/url.ipp>
#include <levee/retry/impl/retry.ipp>
#include <levee/retry/impl/retry_budget.ipp>
