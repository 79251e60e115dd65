// levee: the sans-I/O response reader, compiled once in lib/.
#pragma once

#include <levee/http/detail/response_reader.hpp>
#include <levee/http/error.hpp>

#include <boost/beast/http/error.hpp>

#include <algorithm>

namespace levee::http::detail {

namespace beast = boost::beast;

response_reader::response_reader(const response_limits& limits, bool head_request)
    : limits_(limits), head_(head_request), buffer_(limits.buffer_limit) {
  reset_parser();
}

void response_reader::restart(const response_limits& limits, bool head_request) {
  limits_ = limits;
  head_ = head_request;
  got_some_ = false;
  done_ = false;
  interim_ = 0;
  read_size_ = 4 * 1024;
  prepared_ = 0;
  buffer_.clear();
  if (buffer_.capacity() > kept_capacity) buffer_.shrink_to_fit();  // empty: frees it
  buffer_.max_size(limits.buffer_limit);
  reset_parser();
}

void response_reader::reset_parser() {
  parser_.emplace();
  parser_->body_limit(limits_.body_limit);
  parser_->header_limit(limits_.header_limit);
  parser_->eager(true);
  if (head_) parser_->skip(true);  // a response to HEAD has no body, whatever it says
}

boost::asio::mutable_buffer response_reader::prepare(boost::system::error_code& ec) {
  ec = {};
  const std::size_t room = buffer_.max_size() - buffer_.size();
  if (room == 0) {
    ec = beast::http::error::buffer_overflow;
    return {};
  }
  prepared_ = std::min(room, read_size_);
  return buffer_.prepare(prepared_);
}

void response_reader::commit(std::size_t n) noexcept {
  if (n > 0) got_some_ = true;
  if (n == prepared_ && read_size_ < 64 * 1024) read_size_ *= 2;  // more is coming: larger reads
  buffer_.commit(n);
}

bool response_reader::parse(boost::system::error_code& ec) {
  ec = {};
  if (done_) return true;
  while (buffer_.size() > 0) {
    // In a chunked body Beast 1.81 asserts that a chunk line it already saw
    // as the last one ("0\r\n") comes back with at least 5 bytes: present
    // none until 5 are buffered (found by the fuzzer, with reads of one byte).
    // A complete chunked message still needs at least "0\r\n\r\n" from any
    // chunk line, so waiting for 5 never stalls a well-formed response.
    if (parser_->is_header_done() && parser_->chunked() && buffer_.size() < 5) return false;
    const std::size_t used = parser_->put(buffer_.data(), ec);
    buffer_.consume(used);
    if (ec == beast::http::error::need_more) {
      ec = {};
      return false;
    }
    if (ec) return false;
    if (parser_->is_header_done()) {
      const unsigned status = parser_->get().result_int();
      if (status == 101) {
        ec = make_error_code(error::unexpected_upgrade);
        return false;
      }
      if (status / 100 == 1) {
        // Interim: 100 Continue, 102 Processing, 103 Early Hints. Beast knows
        // they have no body; drop the whole message and read on.
        if (!parser_->is_done()) continue;
        if (++interim_ > limits_.max_interim) {
          ec = make_error_code(error::too_many_interim_responses);
          return false;
        }
        reset_parser();
        continue;
      }
    }
    if (parser_->is_done()) {
      done_ = true;
      return true;
    }
    if (used == 0) return false;  // the parser wants more than there is
  }
  return false;
}

bool response_reader::finish(boost::system::error_code& ec) {
  if (parse(ec)) return true;
  if (ec) return false;
  if (!parser_->got_some()) {
    // Nothing of a final response (interim ones may have come).
    ec = beast::http::error::end_of_stream;
    return false;
  }
  parser_->put_eof(ec);
  if (ec) return false;
  if (!parser_->is_done()) {
    ec = beast::http::error::partial_message;
    return false;
  }
  done_ = true;
  return true;
}

bool response_reader::clean() const noexcept {
  return done_ && buffer_.size() == 0;
}

response response_reader::release() {
  // An idle connection keeps its reader: not the 64 KiB reads of a large
  // response. (Bytes left after the response: the connection is closed.)
  if (buffer_.size() == 0 && buffer_.capacity() > kept_capacity) buffer_.shrink_to_fit();
  return parser_->release();
}

}  // namespace levee::http::detail
