// levee: reading one HTTP/1.1 response off a connection, without I/O.
#pragma once

#include <levee/http/options.hpp>

#include <boost/asio/buffer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/parser.hpp>

#include <cstddef>
#include <optional>

namespace levee::http::detail {

/// How much one response may hold. Every byte buffered for a response is
/// bounded: the header by `header_limit`, the body by `body_limit`, and what
/// waits in the read buffer (a header being read, a chunk header line with its
/// extensions, the trailer section) by `buffer_limit`.
struct response_limits {
  std::size_t body_limit = std::size_t{1} << 20;
  std::uint32_t header_limit = 8 * 1024;
  std::size_t buffer_limit = 8 * 1024 + 64 * 1024;
  /// Interim (1xx) responses skipped before the final one; one more is an error.
  unsigned max_interim = 8;
};

/// The framing of one response, fed with bytes as they arrive (a sans-I/O
/// reader: the caller does the reads). It skips interim 1xx responses (RFC
/// 9110, 15.2), refuses `101 Switching Protocols`, knows that a response to
/// HEAD has no body (and 204 and 304 neither, by Beast), and tells whether
/// anything followed the final response: a connection with leftover bytes must
/// never carry another request.
class response_reader {
 public:
  response_reader(const response_limits& limits, bool head_request);
  /// Ready for the next response on the same connection, as if made anew
  /// with these arguments, except that the read buffer keeps its storage,
  /// so that a keep-alive connection's requests allocate no read buffer
  /// (bench/README.md, "The request on its connection's strand").
  void restart(const response_limits& limits, bool head_request);
  /// The read buffer's storage, in bytes: at most 16 KiB once a response is
  /// released (`release`), so that an idle connection keeps no more.
  std::size_t capacity() const noexcept { return buffer_.capacity(); }

  /// Room for the next read, never past `buffer_limit`: 4 KiB at first, twice
  /// as much after each read that filled it, up to 64 KiB (a small response
  /// costs no 64 KiB allocation, which glibc gave back to the system and took
  /// again on every request: bench/README.md, "HTTP client against wrk").
  /// An empty buffer and `http::error::buffer_overflow` when the buffer is
  /// full and the parser still needs more (an endless chunk header or
  /// trailer section).
  boost::asio::mutable_buffer prepare(boost::system::error_code& ec);
  /// `n` bytes were read into the buffer `prepare` returned.
  void commit(std::size_t n) noexcept;

  /// Parses what was read. True once the final response is complete; false
  /// when more bytes are needed, or on an error (in `ec`).
  bool parse(boost::system::error_code& ec);

  /// The peer closed the connection (a TCP FIN, or a TLS stream truncated
  /// without `close_notify`): parses what is left and completes a response
  /// whose body ends at the close. True if the final response is complete;
  /// otherwise `ec` says why (`end_of_stream` when nothing at all came,
  /// `partial_message` otherwise).
  bool finish(boost::system::error_code& ec);

  /// True once any byte of any response arrived.
  bool got_some() const noexcept { return got_some_; }
  /// True when the final response is complete and nothing followed it in the
  /// buffer: the connection may carry another request (if the response
  /// allows keep-alive).
  bool clean() const noexcept;
  /// Whether the final response lets its connection carry another request,
  /// from what the parser noted while it read the header (no second scan
  /// of the Connection field, as `message::keep_alive` makes): not after
  /// `Connection: close` (HTTP/1.1), only with `keep-alive` (HTTP/1.0),
  /// and never when the body was delimited by the close. Only once `parse`
  /// or `finish` returned true, before or after `release`.
  bool keep_alive() const noexcept { return done_ && parser_->keep_alive(); }
  /// Interim responses skipped.
  unsigned interim() const noexcept { return interim_; }

  /// The final response (after `parse` or `finish` returned true). A read
  /// buffer grown past 16 KiB (for a large response) is freed if nothing is
  /// left in it.
  response release();

 private:
  using parser_type = boost::beast::http::response_parser<boost::beast::http::string_body>;
  static constexpr std::size_t kept_capacity = 16 * 1024;  // see `capacity`
  void reset_parser();

  response_limits limits_;
  bool head_;
  bool got_some_ = false;
  bool done_ = false;
  unsigned interim_ = 0;
  std::size_t read_size_ = 4 * 1024;  // the next read's size (see `prepare`)
  std::size_t prepared_ = 0;          // the last read's size
  boost::beast::flat_buffer buffer_;
  std::optional<parser_type> parser_;
};

}  // namespace levee::http::detail
