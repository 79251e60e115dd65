#include <flaky/server.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

#include <list>
#include <random>
#include <stdexcept>

namespace flaky {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using steady = std::chrono::steady_clock;

struct server::impl : std::enable_shared_from_this<server::impl> {
  impl(asio::any_io_executor e, std::vector<phase> s, server_options o)
      : ex(std::move(e)),
        schedule(std::move(s)),
        options(std::move(o)),
        acceptor(ex),
        rng(options.seed),
        by_phase(std::make_unique<std::atomic<std::uint64_t>[]>(schedule.size())) {
    nanos at{0};
    for (const auto& p : schedule) {
      starts.push_back(at);
      at += scaled(p.duration);
    }
    total = at;
  }

  nanos scaled(nanos d) const {
    return nanos(static_cast<std::int64_t>(static_cast<double>(d.count()) * options.time_scale));
  }

  // Which phase, and how far into it (0..1).
  std::pair<std::size_t, double> where() const {
    const std::size_t held_phase = held.load();
    if (held_phase != no_hold) return {held_phase, 0.5};
    nanos t = steady::now() - started;
    if (t >= total) {
      if (!options.loop) return {schedule.size() - 1, 1.0};
      t = nanos(t.count() % std::max<std::int64_t>(1, total.count()));
    }
    std::size_t i = 0;
    while (i + 1 < schedule.size() && t >= starts[i + 1]) ++i;
    const double span =
        static_cast<double>(std::max<std::int64_t>(1, scaled(schedule[i].duration).count()));
    return {i, static_cast<double>((t - starts[i]).count()) / span};
  }

  void open_listener() {
    tcp::endpoint endpoint(asio::ip::make_address(options.address), port);
    acceptor.open(endpoint.protocol());
    acceptor.set_option(asio::socket_base::reuse_address(true));
    acceptor.bind(endpoint);
    acceptor.listen(asio::socket_base::max_listen_connections);
    port = acceptor.local_endpoint().port();
    asio::co_spawn(ex, accept_loop(shared_from_this()), asio::detached);
  }

  static asio::awaitable<void> accept_loop(std::shared_ptr<impl> self) {
    for (;;) {
      auto [ec, socket] = co_await self->acceptor.async_accept(asio::as_tuple(asio::use_awaitable));
      if (ec) co_return;  // closed: stopped, or a refusing phase
      ++self->connections;
      asio::co_spawn(self->ex, session(self, std::move(socket)), asio::detached);
    }
  }

  // Watches the clock: closes the listener during refusing phases.
  static asio::awaitable<void> watch(std::shared_ptr<impl> self) {
    asio::steady_timer tick(self->ex);
    while (!self->stopped) {
      const bool refuse = self->schedule[self->where().first].refuse;
      if (refuse && self->acceptor.is_open()) {
        boost::system::error_code ignored;
        self->acceptor.close(ignored);
        for (auto* s : self->sessions) s->socket().close(ignored);
      } else if (!refuse && !self->acceptor.is_open()) {
        self->open_listener();
      }
      tick.expires_after(std::chrono::milliseconds(5));
      co_await tick.async_wait(asio::use_awaitable);
    }
  }

  // Registered for `stop`, which closes every connection.
  struct registration {
    registration(impl& s, beast::tcp_stream& stream)
        : self(s), it(s.sessions.insert(s.sessions.end(), &stream)) {}
    ~registration() { self.sessions.erase(it); }
    impl& self;
    std::list<beast::tcp_stream*>::iterator it;
  };

  static asio::awaitable<void> session(std::shared_ptr<impl> self, tcp::socket socket) {
    if (!self->options.tls) {
      beast::tcp_stream stream(std::move(socket));
      registration registered(*self, stream);
      co_await serve(self, stream);
      co_return;
    }
    beast::ssl_stream<beast::tcp_stream> stream(std::move(socket), *self->options.tls);
    registration registered(*self, stream.next_layer());
    stream.next_layer().expires_after(std::chrono::seconds(10));
    auto [hec] = co_await stream.async_handshake(asio::ssl::stream_base::server,
                                                 asio::as_tuple(asio::use_awaitable));
    if (hec || self->stopped) co_return;
    stream.next_layer().expires_never();
    co_await serve(self, stream);
  }

  template <class Stream>
  static asio::awaitable<void> serve(std::shared_ptr<impl> self, Stream& stream) {
    beast::flat_buffer buffer;
    for (;;) {
      http::request_parser<http::string_body> parser;
      parser.body_limit(64 * 1024);
      parser.header_limit(16 * 1024);
      auto [ec, n] =
          co_await http::async_read(stream, buffer, parser, asio::as_tuple(asio::use_awaitable));
      if (ec || self->stopped) co_return;
      const auto req = parser.release();
      ++self->requests;
      const std::size_t now_in_flight = ++self->in_flight;
      for (auto peak = self->peak_in_flight.load();
           now_in_flight > peak &&
           !self->peak_in_flight.compare_exchange_weak(peak, now_in_flight);) {
      }
      struct leave {
        std::atomic<std::size_t>& n;
        ~leave() { --n; }
      } in_flight_guard{self->in_flight};

      const auto [index, progress] = self->where();
      const phase& p = self->schedule[index];
      ++self->by_phase[index];
      std::uniform_real_distribution<double> unit(0, 1);
      if (p.refuse || unit(self->rng) < p.reset_rate) {
        ++self->resets;
        boost::system::error_code ignored;
        auto& socket = beast::get_lowest_layer(stream).socket();
        socket.set_option(asio::socket_base::linger(true, 0), ignored);
        socket.close(ignored);  // RST
        co_return;
      }
      auto latency = self->scaled(p.latency.sample(progress, self->rng));
      if (p.capacity > 0 && now_in_flight > p.capacity) {
        latency = nanos(static_cast<std::int64_t>(static_cast<double>(latency.count()) *
                                                  static_cast<double>(now_in_flight) /
                                                  static_cast<double>(p.capacity)));
      }
      if (latency > nanos(0)) {
        asio::steady_timer wait(self->ex, latency);
        auto waiting = self->timers.insert(self->timers.end(), &wait);
        auto [wec] = co_await wait.async_wait(asio::as_tuple(asio::use_awaitable));
        self->timers.erase(waiting);
        if (wec || self->stopped) co_return;
      }
      const bool fail = unit(self->rng) < p.error_rate;
      http::response<http::string_body> res(
          fail ? static_cast<http::status>(p.error_status) : http::status::ok, req.version());
      res.set(http::field::server, "levee-flaky");
      res.set(http::field::content_type, "application/json");
      if (fail && p.retry_after) res.set(http::field::retry_after, std::to_string(*p.retry_after));
      res.body() =
          fail ? R"({"error":"injected failure","phase":")" + p.name + "\"}"
               : R"({"recommendations":["kettle","teapot","mug"],"phase":")" + p.name + "\"}";
      res.keep_alive(req.keep_alive());
      res.prepare_payload();
      ++(fail ? self->errors : self->ok);
      auto [wec, written] =
          co_await http::async_write(stream, res, asio::as_tuple(asio::use_awaitable));
      if (wec || !res.keep_alive()) co_return;
    }
  }

  static constexpr std::size_t no_hold = static_cast<std::size_t>(-1);

  asio::any_io_executor ex;
  std::vector<phase> schedule;
  server_options options;
  tcp::acceptor acceptor;
  std::uint16_t port = 0;
  std::mt19937_64 rng;
  std::vector<nanos> starts;
  nanos total{0};
  steady::time_point started{};
  std::atomic<std::size_t> held{no_hold};
  std::atomic<bool> stopped{false};
  std::list<beast::tcp_stream*> sessions;  // touched on the server's executor only
  std::list<asio::steady_timer*> timers;   // latencies being waited, likewise
  std::unique_ptr<std::atomic<std::uint64_t>[]> by_phase;
  std::atomic<std::uint64_t> requests{0}, ok{0}, errors{0}, resets{0}, connections{0};
  std::atomic<std::size_t> in_flight{0}, peak_in_flight{0};
};

server::server(asio::any_io_executor ex, std::vector<phase> schedule, server_options options) {
  if (schedule.empty()) throw std::invalid_argument("flaky::server: the schedule has no phase");
  impl_ = std::make_shared<impl>(std::move(ex), std::move(schedule), std::move(options));
  impl_->port = impl_->options.port;
}

server::~server() {
  stop();
}

std::uint16_t server::start() {
  impl_->started = steady::now();
  impl_->open_listener();
  asio::co_spawn(impl_->ex, impl::watch(impl_), asio::detached);
  return impl_->port;
}

void server::stop() {
  if (impl_->stopped.exchange(true)) return;
  asio::dispatch(impl_->ex, [self = impl_] {
    boost::system::error_code ignored;
    self->acceptor.close(ignored);
    for (auto* s : self->sessions) s->socket().close(ignored);
    for (auto* t : self->timers) t->cancel();
  });
}

std::uint64_t server::requests_in_phase(std::size_t index) const noexcept {
  return index < impl_->schedule.size() ? impl_->by_phase[index].load() : 0;
}

void server::hold_phase(std::size_t index) {
  impl_->held = std::min(index, impl_->schedule.size() - 1);
}

const std::vector<phase>& server::schedule() const noexcept {
  return impl_->schedule;
}
std::size_t server::phase_index() const noexcept {
  return impl_->where().first;
}
std::chrono::nanoseconds server::elapsed() const noexcept {
  return steady::now() - impl_->started;
}
std::chrono::nanoseconds server::phase_start(std::size_t index) const noexcept {
  return impl_->starts.at(index);
}
std::chrono::nanoseconds server::length() const noexcept {
  return impl_->total;
}

server_stats server::stats() const noexcept {
  const impl& s = *impl_;
  return {s.requests.load(),    s.ok.load(),        s.errors.load(),         s.resets.load(),
          s.connections.load(), s.in_flight.load(), s.peak_in_flight.load(), s.where().first};
}

}  // namespace flaky
