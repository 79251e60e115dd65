// One guarded call: what levee adds to a user's translation unit.
#include <levee/breaker/circuit_breaker.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace asio = boost::asio;

asio::awaitable<int> fetch();

asio::awaitable<int> call(levee::circuit_breaker& breaker) {
  co_return co_await breaker(fetch());
}

void start(asio::io_context& ctx, levee::circuit_breaker& breaker) {
  asio::co_spawn(ctx, call(breaker), asio::detached);
}
