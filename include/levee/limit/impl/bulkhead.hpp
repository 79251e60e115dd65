// levee: basic_bulkhead's template bodies (included by levee/bulkhead.hpp).
#pragma once

#include <levee/core/detail/own_frame.hpp>
#include <levee/core/detail/result_shape.hpp>
#include <levee/core/detail/validate.hpp>
#include <levee/limit/detail/bulkhead.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <tuple>
#include <utility>

namespace levee {

template <class Clock>
template <class Executor>
requires std::is_convertible_v<const Executor&, boost::asio::any_io_executor>
basic_bulkhead<Clock>::basic_bulkhead(const Executor& ex, bulkhead_options options)
    : executor_(ex), state_(std::make_shared<detail::bulkhead_state>(detail::checked(options))) {}

template <class Clock>
basic_bulkhead<Clock>& basic_bulkhead<Clock>::operator=(basic_bulkhead&& other) {
  if (this != &other) {
    if (state_) state_->close();
    executor_ = std::move(other.executor_);
    state_ = std::move(other.state_);
  }
  return *this;
}

template <class Clock>
basic_bulkhead<Clock>::~basic_bulkhead() {
  if (state_) state_->close();
}

template <class Clock>
const bulkhead_options& basic_bulkhead<Clock>::options() const noexcept {
  return state_->options();
}

template <class Clock>
void basic_bulkhead<Clock>::reconfigure(const bulkhead_options& options) {
  state_->reconfigure(detail::checked(options));
}

template <class Clock>
std::uint64_t basic_bulkhead<Clock>::reconfigurations() const noexcept {
  return state_->reconfigurations();
}

template <class Clock>
std::size_t basic_bulkhead<Clock>::in_flight() const noexcept {
  return state_->in_flight();
}

template <class Clock>
std::size_t basic_bulkhead<Clock>::queued() const noexcept {
  return state_->queued();
}

template <class Clock>
template <class T, class Executor>
boost::asio::awaitable<T, Executor> basic_bulkhead<Clock>::operator()(
    boost::asio::awaitable<T, Executor> aw) {
  return call(detail::own_frame, state_, state_->options().max_wait, std::move(aw));
}

template <class Clock>
template <BOOST_ASIO_COMPLETION_TOKEN_FOR(void(boost::system::error_code)) CompletionToken>
auto basic_bulkhead<Clock>::async_acquire(CompletionToken&& token) {
  return detail::async_wait_for_slot<Clock>(state_, executor_, state_->options().max_wait,
                                            std::forward<CompletionToken>(token));
}

template <class Clock>
void basic_bulkhead<Clock>::release() noexcept {
  state_->leave();
}

template <class Clock>
template <class T, class Executor>
boost::asio::awaitable<T, Executor> basic_bulkhead<Clock>::call(
    detail::own_frame_t, std::shared_ptr<detail::bulkhead_state> state,
    std::chrono::nanoseconds max_wait, boost::asio::awaitable<T, Executor> aw) {
  namespace asio = boost::asio;
  boost::system::error_code ec;
  switch (state->try_enter()) {
    case detail::bulkhead_state::entry::granted:
      break;
    case detail::bulkhead_state::entry::full:
      ec = error::bulkhead_full;
      break;
    case detail::bulkhead_state::entry::queue: {
      const Executor ex = co_await asio::this_coro::executor;
      std::tie(ec) = co_await detail::async_wait_for_slot<Clock>(
          state, ex, max_wait, asio::as_tuple(asio::use_awaitable_t<Executor>{}));
      break;
    }
  }
  if (ec) co_return detail::error_result<T>(ec);
  detail::bulkhead_slot slot(std::move(state));
  co_return co_await std::move(aw);
}

}  // namespace levee
