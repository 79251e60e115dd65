// The same unit as guarded.cpp without levee: one coroutine awaiting fetch().
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace asio = boost::asio;

asio::awaitable<int> fetch();

asio::awaitable<int> call() {
  co_return co_await fetch();
}

void start(asio::io_context& ctx) {
  asio::co_spawn(ctx, call(), asio::detached);
}
