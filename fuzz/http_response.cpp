// libFuzzer target: the response-parsing and classification path of the HTTP
// layer. Bytes from the network go through Beast's parser with the client's
// limits, then through the classifier, the retry predicate and the Retry-After
// parser; the same bytes are also tried as a Retry-After value, an HTTP-date
// and a URL. Nothing may crash, hang, leak or grow without bound.
//
//   levee-fuzz-http-response -max_total_time=60 corpus/
#include <levee/http.hpp>

#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/parser.hpp>

#include <cstddef>
#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace http = levee::http;
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  boost::beast::http::response_parser<boost::beast::http::string_body> parser;
  parser.body_limit(64 * 1024);  // the client's limits, smaller
  parser.header_limit(8 * 1024);
  parser.eager(true);
  boost::system::error_code ec;
  std::size_t used = 0;
  while (used < size && !parser.is_done()) {
    const auto n = parser.put(boost::asio::buffer(data + used, size - used), ec);
    if (ec == boost::beast::http::error::need_more) {
      ec = {};
      break;
    }
    if (ec || n == 0) break;
    used += n;
  }
  // End of input, as beast::http::read sees it: nothing at all is
  // end_of_stream; a message without a length ends at EOF.
  if (!ec && !parser.is_done()) {
    if (parser.got_some()) {
      parser.put_eof(ec);
    } else {
      ec = boost::beast::http::error::end_of_stream;
    }
  }

  http::result r;
  if (!ec && parser.is_done()) {
    r = http::result(boost::system::error_code(), parser.release());
  } else {
    r = http::result(ec ? ec : make_error_code(boost::beast::http::error::partial_message),
                     http::response());
  }
  const auto view = levee::detail::make_value_result(r);
  (void)http::classify(view);
  (void)http::retryable(view);
  (void)http::retry_after(view);

  (void)http::parse_retry_after(text, std::chrono::system_clock::time_point());
  (void)http::parse_http_date(text);
  http::url_parts url;
  (void)http::parse_url(text, url);
  return 0;
}
