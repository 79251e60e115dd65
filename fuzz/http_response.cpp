// libFuzzer target: the response path of the HTTP client. Bytes from the
// network go through levee's response reader (the client's own framing:
// interim 1xx responses skipped, chunk extensions and trailers bounded, the
// buffer limited, several responses in one read detected) in reads of the
// sizes the input's first byte picks, then through the classifier, the retry
// predicate and the Retry-After parser; the same bytes are also tried as a
// Retry-After value and an HTTP-date. Nothing may crash, hang, leak or grow
// without bound.
//
//   levee-fuzz-http-response -max_total_time=60 corpus/
#include <levee/http.hpp>
#include <levee/http/detail/response_reader.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace http = levee::http;
  if (size == 0) return 0;
  // The first byte: read size (1 to 256 bytes a read) and whether the
  // request was a HEAD.
  const std::size_t step = static_cast<std::size_t>(data[0] & 0x7f) * 2 + 1;
  const bool head = (data[0] & 0x80) != 0;
  ++data;
  --size;
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  // The client's limits, smaller: a 4 KiB header, a 64 KiB body, a 12 KiB buffer.
  http::detail::response_reader reader({64 * 1024, 4 * 1024, 12 * 1024, 8}, head);
  boost::system::error_code ec;
  bool done = false;
  std::size_t used = 0;
  while (!done && !ec) {
    done = reader.parse(ec);
    if (done || ec) break;
    if (used == size) {  // the peer closed
      done = reader.finish(ec);
      break;
    }
    const auto space = reader.prepare(ec);
    if (ec) break;
    const std::size_t n = std::min({step, size - used, space.size()});
    std::memcpy(space.data(), data + used, n);
    reader.commit(n);
    used += n;
  }

  http::result r;
  if (done && !ec) {
    (void)reader.clean();
    r = http::result(boost::system::error_code(), reader.release());
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
  return 0;
}
