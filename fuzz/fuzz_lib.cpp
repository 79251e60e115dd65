// What the fuzz target needs of levee's compiled part, built with coverage:
// Asio's and Beast's non-template code (Beast's parser lives there) and levee's
// classifier, retry predicate and URL parser. The coroutine code of the HTTP
// client is left out: Clang 14 cannot emit coverage tables for split
// coroutine functions ("Cannot represent a difference across sections").
#include <boost/asio/impl/src.hpp>
#include <boost/beast/src.hpp>

#include <levee/impl/error.ipp>
#include <levee/impl/http_classify.ipp>
#include <levee/impl/http_error.ipp>
#include <levee/impl/http_response_reader.ipp>
#include <levee/impl/http_url.ipp>
#include <levee/impl/retry.ipp>
#include <levee/impl/retry_budget.ipp>
